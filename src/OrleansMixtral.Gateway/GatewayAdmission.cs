using System.Threading.RateLimiting;

namespace OrleansMixtral.Gateway;

/// <summary>
/// The gateway's bound on work: at most <see cref="GatewayOptions.MaxConcurrentRequests"/> generations at once, at most
/// <see cref="GatewayOptions.MaxQueuedRequests"/> more waiting (first come, first served); a request beyond both is
/// refused at once (429 with Retry-After) rather than piling up. The engines queue behind this too, and an engine whose
/// own queue is full also makes the request a 429.
/// </summary>
public sealed class GatewayAdmission(GatewayOptions options) : IDisposable
{
    readonly ConcurrencyLimiter _limiter = new(new ConcurrencyLimiterOptions
    {
        PermitLimit = Math.Max(1, options.MaxConcurrentRequests),
        QueueLimit = Math.Max(0, options.MaxQueuedRequests),
        QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
    });

    public int RetryAfterSeconds { get; } = Math.Max(1, options.RetryAfterSeconds);

    /// <summary>A slot (dispose it when the generation ends), or null when the gateway is full.</summary>
    public async ValueTask<IDisposable?> EnterAsync(CancellationToken cancellationToken)
    {
        var lease = await _limiter.AcquireAsync(1, cancellationToken);
        if (lease.IsAcquired) return lease;
        lease.Dispose();
        return null;
    }

    public long Active => options.MaxConcurrentRequests - (_limiter.GetStatistics()?.CurrentAvailablePermits ?? 0);
    public long Queued => _limiter.GetStatistics()?.CurrentQueuedCount ?? 0;

    public void Dispose() => _limiter.Dispose();
}
