using OrleansMixtral.Gateway;

// The OpenAI-compatible gateway: `dotnet run --project silos/OrleansMixtral.Gateway -c Release -- --Cluster embedded` serves
// the bundled model on http://127.0.0.1:8000 from one process; `--Cluster localhost` (the default) or HOST:PORT or
// redis://HOST:PORT serves from a running cluster. Settings: appsettings.json, environment, command line (--Cluster,
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
