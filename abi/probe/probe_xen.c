/* TODO: not yet probed */
#include "probe.h"

void probe_xen(void)
{
}
