/* TODO: not yet probed */
#include "probe.h"

void probe_grant_table(void)
{
}
