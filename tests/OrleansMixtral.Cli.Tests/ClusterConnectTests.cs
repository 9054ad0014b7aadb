using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace OrleansMixtral.Cli.Tests;

/// <summary><c>chat --cluster</c> to an address where no cluster answers: "connecting…", then one line after the timeout.</summary>
public sealed class ClusterConnectTests
{
    [Fact]
    public void A_cluster_that_does_not_answer_is_one_line_after_the_timeout()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop(); // nothing listens there now

        var watch = Stopwatch.StartNew();
        var r = Cli.Run("chat", "--cluster", $"127.0.0.1:{port}", "--cluster-id", "nobody", "--connect-timeout", "2");
        var elapsed = watch.Elapsed;

        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Out);
        Assert.Equal(2, r.ErrLines.Length);
        Assert.Equal($"connecting to the cluster at 127.0.0.1:{port} (cluster id nobody)…", r.ErrLines[0]);
        Assert.StartsWith($"error: cannot connect to the cluster at 127.0.0.1:{port} (cluster id nobody; a silo prints its own when ready): no gateway answered within 2 s",
            r.ErrLines[1]);
        Assert.InRange(elapsed.TotalSeconds, 1.5, 8);
    }

    [Fact]
    public void The_timeout_needs_a_cluster_and_a_positive_number()
    {
        Assert.Equal(CliApp.ExitUsage, Cli.Run("chat", "--model", Cli.Model, "--connect-timeout", "3").ExitCode);
        Assert.Equal(CliApp.ExitUsage, Cli.Run("chat", "--cluster", "localhost", "--connect-timeout", "0").ExitCode);
    }
}
