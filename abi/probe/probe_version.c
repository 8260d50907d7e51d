/* xen/version.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/version.h>

void probe_version(void)
{
    probe_header("version.h");

    CONST(XENVER_version);
    CONST(XENVER_extraversion);
    CONST(XENVER_compile_info);
    CONST(XENVER_capabilities);
    CONST(XENVER_changeset);
    CONST(XENVER_platform_parameters);
    CONST(XENVER_get_features);
    CONST(XENVER_pagesize);
    CONST(XENVER_guest_handle);
    CONST(XENVER_commandline);
    CONST(XENVER_build_id);

    /* Sizes of the char-array typedefs, as the header names them. */
    CONST(XEN_EXTRAVERSION_LEN);
    CONST(XEN_CAPABILITIES_INFO_LEN);
    CONST(XEN_CHANGESET_INFO_LEN);

    STRUCT(xen_compile_info) FIELD(compiler) FIELD(compile_by) FIELD(compile_domain) FIELD(compile_date) END();
    STRUCT(xen_platform_parameters) FIELD(virt_start) END();
    STRUCT(xen_feature_info) FIELD(submap_idx) FIELD(submap) END();
    /* buf[] is a flexible array member after len: no size of its own. */
    STRUCT(xen_build_id) FIELD(len) END();
}
