/* xen/io/protocols.h */
#include "probe.h"

#include <xen/io/protocols.h>

void probe_io_protocols(void)
{
    probe_header("io/protocols.h");

    STRING(XEN_IO_PROTO_ABI_X86_32);
    STRING(XEN_IO_PROTO_ABI_X86_64);
    STRING(XEN_IO_PROTO_ABI_ARM);
    STRING(XEN_IO_PROTO_ABI_NATIVE);
}
