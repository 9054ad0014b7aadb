using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Orleans;

namespace OrleansMixtral.Client.AI;

public static class MixtralServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="MixtralChatService"/> (a singleton over the <see cref="IClusterClient"/> in the container:
    /// add one with <c>UseOrleansClient(c => c.UseMixtralCluster("localhost"))</c>, or run inside a silo).
    /// </summary>
    public static IServiceCollection AddMixtralChatService(this IServiceCollection services, Action<MixtralChatServiceOptions>? configure = null)
    {
        var options = new MixtralChatServiceOptions();
        configure?.Invoke(options);
        services.TryAddSingleton(sp => new MixtralChatService(sp.GetRequiredService<IClusterClient>(), options));
        return services;
    }

    /// <summary>
    /// Registers <see cref="MixtralChatClient"/> as the container's <see cref="IChatClient"/> (and <see cref="MixtralChatService"/>).
    /// The result is Microsoft.Extensions.AI's builder: add <c>.UseLogging()</c>, <c>.UseOpenTelemetry()</c> and the like to it.
    /// </summary>
    public static ChatClientBuilder AddMixtralChatClient(this IServiceCollection services,
        Action<MixtralChatServiceOptions>? configureService = null, MixtralChatClientOptions? clientOptions = null)
    {
        services.AddMixtralChatService(configureService);
        return services.AddChatClient(sp => new MixtralChatClient(sp.GetRequiredService<MixtralChatService>(), clientOptions));
    }
}
