namespace Paravirt.Tests.Conformance;

public static partial class AbiExclusions
{
    private static readonly AbiExclusion[] IoXsWire =
    [
        new("xsd_errors",
            "A host-side lookup table ({ errnum, const char *errstring }), never in shared memory or on the wire; "
            + "its errnum is the C library's errno. Its names are mirrored as XsWire.XSD_ERROR_* and XsWire.xsd_errors."),
    ];
}
