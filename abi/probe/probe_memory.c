/* TODO: not yet probed */
#include "probe.h"

void probe_memory(void)
{
}
