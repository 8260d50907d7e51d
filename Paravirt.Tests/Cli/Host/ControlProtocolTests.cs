using Paravirt.Cli;
using Paravirt.Cli.Host;

namespace Paravirt.Tests.Cli.Host;

/// <summary>The host's request and reply lines.</summary>
public sealed class ControlProtocolTests
{
    [Fact]
    public void A_Request_Round_Trips_Through_Its_Json_Line()
    {
        var request = new ControlRequest("shutdown") { Domain = "web \"1\"", Wait = true, TimeoutSeconds = 2.5 };
        var line = request.ToJson();
        line.Should().NotContain("\n");
        ControlRequest.Parse(line).Should().Be(request);
        ControlRequest.Parse("{\"verb\":\"create\",\"config\":\"/a/b.cfg\"}").Should().Be(new ControlRequest("create") { Config = "/a/b.cfg" });
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"verb\":3}")]
    [InlineData("[1]")]
    [InlineData("{\"verb\":")]
    public void A_Line_That_Is_Not_A_Request_Is_A_FormatException(string line) =>
        FluentActions.Invoking(() => ControlRequest.Parse(line)).Should().Throw<FormatException>();

    [Fact]
    public void Replies_Carry_Ok_Or_The_Error_And_The_Verbs_Exit_Code()
    {
        using var ok = HostReply.Parse(ControlReply.Ok(w => w.WriteNumber("id", 7)));
        ok.Ok.Should().BeTrue();
        ok.Root.GetProperty("id").GetInt32().Should().Be(7);

        using var error = HostReply.Parse(ControlReply.Error(ExitCodes.NoSuchDomain, "no domain 'x'"));
        error.Ok.Should().BeFalse();
        error.Code.Should().Be(ExitCodes.NoSuchDomain);
        error.Error.Should().Be("no domain 'x'");
    }

    [Fact]
    public void A_Run_Hosts_Answer_And_No_Answer_Are_Errors_That_Say_So()
    {
        using var run = HostReply.Parse("{\"error\":\"unknown request; expected list\"}");
        run.Ok.Should().BeFalse();
        run.Code.Should().Be(ExitCodes.Refused);
        run.Error.Should().Be("not a paravirt host (it answered: unknown request; expected list)");

        using var closed = HostReply.Parse(null);
        closed.Ok.Should().BeFalse();
        closed.Error.Should().Contain("closed the connection without an answer");

        using var garbage = HostReply.Parse("hello");
        garbage.Ok.Should().BeFalse();
        garbage.Error.Should().Contain("not a host's reply: hello");
    }
}
