using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// --Cluster embedded is the silo host's job now (it serves the same API): the gateway, which links no engine, refuses it
/// in one line that names the command to run instead, before it listens or loads anything.
/// </summary>
public sealed class EmbeddedModeTests
{
    [Fact(Timeout = 30_000)]
    public void Cluster_embedded_is_refused_in_one_line_naming_the_silo()
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, EnvironmentName = "Testing" });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Cluster"] = "embedded", ["Model"] = RepoPaths.TinyModel, ["urls"] = "http://127.0.0.1:0",
        });
        Assert.False(GatewayHost.TryConfigure(builder, out var error));
        Assert.StartsWith("--Cluster embedded: ", error);
        Assert.Contains("dotnet run --project silos/OrleansMixtral.Silo", error);
        Assert.DoesNotContain('\n', error);
        Assert.DoesNotContain(builder.Services, d => d.ServiceType == typeof(IClusterClient));
    }
}
