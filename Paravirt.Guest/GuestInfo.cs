namespace Paravirt.Guest;

/// <summary>Placeholder until the guest kernel stub lands (issue 7).</summary>
internal static class GuestInfo
{
}
