using Paravirt.Cli;

namespace Paravirt.Tests.Cli;

public sealed class InfoCommandTests
{
    [Fact]
    public void Info_Prints_The_Version_And_Marks_Each_Hypercall_Implemented_Or_ENOSYS()
    {
        var output = new StringWriter();
        InfoCommand.Run(output).Should().Be(0);
        var text = output.ToString();
        text.Should().StartWith("paravirt 4.17");
        text.Should().MatchRegex(@"\n\s*17  xen_version\s+implemented\n");
        text.Should().MatchRegex(@"\n\s*13  multicall\s+implemented\n");
        text.Should().MatchRegex(@"\n\s*20  grant_table_op\s+implemented\n");
        text.Should().MatchRegex(@"\n\s*1  mmu_update\s+implemented\n");
        text.Should().MatchRegex(@"\n\s*7  platform_op\s+-ENOSYS\n");
        text.Should().Contain("every other number answers -ENOSYS");
    }
}
