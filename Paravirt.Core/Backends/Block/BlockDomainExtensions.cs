using Paravirt.Core.Domains;

namespace Paravirt.Core.Backends.Block;

/// <summary>The host's way to give a domain a disk.</summary>
public static class BlockDomainExtensions
{
    /// <summary>
    /// Attaches <paramref name="device"/> to <paramref name="domain"/> as virtual disk
    /// <paramref name="vdev"/> (<c>xvda</c>, <c>xvdb2</c>, <c>d0p1</c>, <c>sda</c>, <c>hdc</c> … see
    /// <see cref="VirtualDeviceNumber"/>): writes the vbd's frontend and backend XenStore nodes as
    /// libxl does and serves the frontend once it connects. Read-only if the device is. The returned
    /// handle detaches the disk when disposed, and detaches by itself when the domain dies.
    /// </summary>
    public static BlkBack AttachDisk(this Domain domain, string vdev, IBlockDevice device, BlkBackOptions? options = null) =>
        BlkBack.Attach(domain, vdev, device, options);
}
