using OrleansMixtral.Silo;

// A silo of the serving cluster: `dotnet run --project silos/OrleansMixtral.Silo` starts a one-silo local cluster with
// the bundled model. Settings: appsettings.json, environment, command line (--Model, --Backend, --Int8, --Clustering
// localhost|redis, --Redis, --Storage memory|redis, --SiloPort, --GatewayPort, --PrimarySiloPort, --AdvertisedHost,
// --Mixtral:Device N for the GPU, --OpenAiApi false, --Gateway:NAME=VALUE, standard --urls). Its HTTP port serves the
// Orleans dashboard and, as the gateway does, the OpenAI-compatible API, /health and /metrics. See docs/CLUSTER.md.
// appsettings.json beside the program, whatever the working directory (model paths still resolve from the latter).
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
OrleansMixtral.Gateway.GatewayHost.UseConsoleLogFormat(builder.Logging);
if (!SiloSetup.TryConfigure(builder, out var error, out var exitCode))
{
    Console.Error.WriteLine("error: " + error);
    return exitCode; // 2: unusable settings; 1: a port in use, an unusable data directory
}
var app = builder.Build();
SiloSetup.MapEndpoints(app);
try
{
    await app.RunAsync();
}
catch (Exception e) when (e is not OperationCanceledException)
{
    // a model that cannot load (missing directory, no GPU for --Backend cuda, …): one line, not a stack trace
    var cause = e;
    while (cause.InnerException is not null) cause = cause.InnerException;
    Console.Error.WriteLine("error: the silo could not start: " + cause.Message);
    return 1;
}
return 0;
