using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using OrleansMixtral.Grains;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// --Cluster embedded: the silo inside the gateway takes its data directory's cluster id, as the silo host does, and a
/// taken port of that silo stops the gateway in one line before anything loads.
/// </summary>
public sealed class EmbeddedClusterTests : IDisposable
{
    readonly string _data = Path.Combine(Path.GetTempPath(), "mixtral-embedded-" + Guid.NewGuid().ToString("N")[..8]);

    static WebApplicationBuilder Builder(Dictionary<string, string?> settings)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, EnvironmentName = "Testing" });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Cluster"] = "embedded", ["Model"] = RepoPaths.TinyModel, ["urls"] = "http://127.0.0.1:0",
        }.Concat(settings));
        return builder;
    }

    [Fact(Timeout = 30_000)]
    public void A_taken_port_of_the_embedded_silo_is_a_one_line_error()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        foreach (var key in new[] { "Gateway:EmbeddedGatewayPort", "Gateway:EmbeddedSiloPort" })
        {
            var builder = Builder(new()
            {
                ["Gateway:EmbeddedSiloPort"] = Cluster.Tests.RedisServer.FreePort().ToString(),
                ["Gateway:EmbeddedGatewayPort"] = Cluster.Tests.RedisServer.FreePort().ToString(),
                [key] = port.ToString(),
                ["Mixtral:DataDirectory"] = _data,
            });
            Assert.False(GatewayHost.TryConfigure(builder, out var error));
            Assert.StartsWith($"port {port} ({key} of the embedded silo) is already in use", error);
            Assert.DoesNotContain('\n', error);
        }
        Assert.False(Directory.Exists(_data), "nothing was created");
    }

    [Fact(Timeout = 30_000)]
    public void The_embedded_silo_takes_its_data_directorys_cluster_id()
    {
        var builder = Builder(new()
        {
            ["Gateway:EmbeddedSiloPort"] = Cluster.Tests.RedisServer.FreePort().ToString(),
            ["Gateway:EmbeddedGatewayPort"] = Cluster.Tests.RedisServer.FreePort().ToString(),
            ["Mixtral:DataDirectory"] = _data,
        });
        Assert.True(GatewayHost.TryConfigure(builder, out var error), error);
        var options = builder.Services.Select(d => d.ImplementationInstance).OfType<GatewayOptions>().Single();
        Assert.Equal(LocalClusters.ClusterIdFor(_data), options.ClusterId);
        Assert.Equal("mixtral", options.ServiceId);
    }

    public void Dispose()
    {
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
    }
}
