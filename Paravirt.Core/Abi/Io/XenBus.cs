namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/xenbus.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// <c>enum xenbus_state</c> (typedef <c>XenbusState</c>): the state each end of a split device writes
/// to its own "state" node in XenStore. It says how far the two ends' initialisation across the bus
/// has come, nothing about the driver's own state.
/// </summary>
[AbiNamePrefix("XenbusState")]
public enum XenbusState
{
    Unknown = 0,
    Initialising = 1,
    /// <summary>Finished early initialisation, waiting for information from the peer or hotplug scripts.</summary>
    InitWait = 2,
    /// <summary>Waiting for a connection from the peer.</summary>
    Initialised = 3,
    Connected = 4,
    /// <summary>Being closed because of an error or an unplug event.</summary>
    Closing = 5,
    Closed = 6,
    /// <summary>Being reconfigured.</summary>
    Reconfiguring = 7,
    Reconfigured = 8,
}
