using OrleansMixtral.Grains;

namespace OrleansMixtral.Cluster.Tests;

public sealed class SmokeTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Fact]
    public async Task OneTurn()
    {
        var c = await fixture.Client.StartConversationAsync();
        var r = await fixture.Client.SendAndCollectAsync(c.ConversationId, "Hello there", ClusterFixture.Short());
        Assert.True(r.Succeeded, r.End.Error);
        Assert.NotEmpty(r.Text);
        var h = await fixture.Client.GetHistoryAsync(c.ConversationId);
        Assert.Equal(2, h.Messages.Length);
    }
}
