/* TODO: not yet probed */
#include "probe.h"

void probe_arch_x86_xen(void)
{
}
