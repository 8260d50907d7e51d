/* TODO: not yet probed */
#include "probe.h"

void probe_features(void)
{
}
