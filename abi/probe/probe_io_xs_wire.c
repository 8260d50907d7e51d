/* TODO: not yet probed */
#include "probe.h"

void probe_io_xs_wire(void)
{
}
