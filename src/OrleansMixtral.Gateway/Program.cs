using OrleansMixtral.Gateway;

// The OpenAI-compatible gateway: `dotnet run --project src/OrleansMixtral.Gateway -c Release` serves a running cluster
// (`--Cluster localhost`, the default, or HOST:PORT, redis://HOST:PORT, postgres:CONNECTION-STRING) on
// http://127.0.0.1:8000; one process with the model is the silo host, which serves the same API. Settings: appsettings.json, environment, command line (--Cluster,
// --Model, --ModelId, --ApiKeysFile, --urls, --Gateway:NAME=VALUE). See docs/GATEWAY.md.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
GatewayHost.UseConsoleLogFormat(builder.Logging);
if (!GatewayHost.TryConfigure(builder, out var error))
{
    Console.Error.WriteLine("error: " + error);
    return 2;
}
var app = builder.Build();
GatewayHost.Map(app);
await app.RunAsync();
return 0;
