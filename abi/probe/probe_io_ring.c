/* TODO: not yet probed */
#include "probe.h"

void probe_io_ring(void)
{
}
