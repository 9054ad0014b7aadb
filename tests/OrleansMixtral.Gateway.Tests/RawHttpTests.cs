using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// Requests Kestrel itself refuses before the gateway's code sees them (bytes no HTTP client library would send), over a
/// raw socket: each answer is OpenAI's error shape, not an empty body; and a body cut short by a half-close is a 400, not
/// silence.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class RawHttpTests(GatewayFixture fixture)
{
    sealed record RawResponse(int Status, Dictionary<string, string> Headers, string Body, bool Closed);

    /// <summary>Sends <paramref name="request"/> (optionally half-closing after it) and reads one response.</summary>
    async Task<RawResponse> SendRaw(byte[] request, bool halfClose = false)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(fixture.BaseUrl.Host, fixture.BaseUrl.Port);
        await socket.SendAsync(request);
        if (halfClose) socket.Shutdown(SocketShutdown.Send);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var received = new MemoryStream();
        var buffer = new byte[64 << 10];
        int headerEnd = -1, contentLength = -1;
        var closed = false;
        try
        {
            while (true)
            {
                var n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    closed = true;
                    break;
                }
                received.Write(buffer, 0, n);
                var text = Encoding.Latin1.GetString(received.GetBuffer(), 0, (int)received.Length);
                if (headerEnd < 0 && (headerEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal)) >= 0)
                {
                    var m = System.Text.RegularExpressions.Regex.Match(text[..headerEnd], @"(?im)^content-length:\s*(\d+)");
                    contentLength = m.Success ? int.Parse(m.Groups[1].Value) : -1;
                }
                if (headerEnd >= 0 && contentLength >= 0 && received.Length >= headerEnd + 4 + contentLength) break;
            }
        }
        catch (SocketException) { closed = true; }
        catch (OperationCanceledException) { }
        var all = Encoding.UTF8.GetString(received.ToArray());
        Assert.True(all.Length > 0, "no response at all");
        var end = all.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        Assert.True(end > 0, "no complete response head: " + all);
        var lines = all[..end].Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1]);
        var headers = lines.Skip(1).Select(l => l.Split(':', 2)).ToDictionary(p => p[0].Trim().ToLowerInvariant(), p => p[1].Trim());
        return new RawResponse(status, headers, all[(end + 4)..], closed);
    }

    static void AssertOpenAiError(RawResponse r, int status)
    {
        Assert.True(r.Status == status, $"expected {status}, got {r.Status}: {r.Body}");
        Assert.StartsWith("application/json", r.Headers.GetValueOrDefault("content-type") ?? "(no content type)");
        using var doc = JsonDocument.Parse(r.Body);
        var error = doc.RootElement.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.Equal(status >= 500 ? "server_error" : "invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(JsonValueKind.String, error.GetProperty("code").ValueKind);
        Assert.True(error.TryGetProperty("param", out _));
    }

    static byte[] Ascii(string s) => Encoding.Latin1.GetBytes(s);

    [Fact(Timeout = 30_000)]
    public async Task Header_bytes_Kestrel_refuses_are_400_in_openai_shape()
    {
        AssertOpenAiError(await SendRaw(Ascii("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\u0000b\r\nConnection: close\r\n\r\n")), 400);
        AssertOpenAiError(await SendRaw(Ascii("GET /health HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\nConnection: close\r\n\r\n")), 400);
        AssertOpenAiError(await SendRaw(Ascii("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Bad\u00ff: b\r\nConnection: close\r\n\r\n")), 400);
        AssertOpenAiError(await SendRaw(Ascii("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")), 400); // no Host
    }

    [Fact(Timeout = 30_000)]
    public async Task A_request_line_over_the_limit_is_414_in_openai_shape() =>
        AssertOpenAiError(await SendRaw(Ascii($"GET /health?{new string('a', 20_000)} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")), 414);

    [Fact(Timeout = 30_000)]
    public async Task Headers_over_the_limit_are_431_in_openai_shape() =>
        AssertOpenAiError(await SendRaw(Ascii($"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {new string('a', 40_000)}\r\nConnection: close\r\n\r\n")), 431);

    [Fact(Timeout = 30_000)]
    public async Task An_asterisk_target_a_bad_method_or_version_is_refused_in_openai_shape()
    {
        AssertOpenAiError(await SendRaw(Ascii("GET * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")), 405); // only OPTIONS takes *
        AssertOpenAiError(await SendRaw(Ascii("G(T /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")), 400);
        AssertOpenAiError(await SendRaw(Ascii("GET /health HTTP/1.7\r\nHost: localhost\r\nConnection: close\r\n\r\n")), 505);

        // The server goes on answering.
        using var ok = await fixture.Http.GetAsync("/health");
        Assert.Equal(200, (int)ok.StatusCode);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_body_shorter_than_its_Content_Length_then_a_half_close_is_400()
    {
        var body = GatewayFixture.ChatBody("hi", 2);
        var head = $"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {GatewayFixture.KeyA}\r\n" +
                   $"Content-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(body) + 100}\r\n\r\n";
        // Many times: the FIN races the server's reading of the request.
        for (var i = 0; i < 25; i++)
        {
            var r = await SendRaw(Ascii(head + body), halfClose: true);
            AssertOpenAiError(r, 400);
            Assert.Contains("Content-Length", r.Body);
            Assert.Equal("close", r.Headers.GetValueOrDefault("connection"));
        }

        // The same with a chunked body that stops before its last chunk.
        var chunked = $"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {GatewayFixture.KeyA}\r\n" +
                      $"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{Encoding.UTF8.GetByteCount(body):x}\r\n{body}\r\n";
        var c = await SendRaw(Ascii(chunked), halfClose: true);
        AssertOpenAiError(c, 400);
        Assert.Contains("last chunk", c.Body);

        // And the server goes on answering.
        using var ok = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("hi", 2)));
        Assert.Equal(200, (int)ok.StatusCode);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_client_that_half_closes_after_a_whole_request_still_gets_its_answer_or_goes_away_cleanly()
    {
        // A complete request then a half-close: Kestrel takes the FIN as the client leaving (that is how a gateway sees a
        // streaming client go away), so no answer is owed; what matters is that nothing breaks for the next client.
        var body = GatewayFixture.ChatBody("hi", 2);
        var head = $"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {GatewayFixture.KeyA}\r\n" +
                   $"Content-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n";
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(fixture.BaseUrl.Host, fixture.BaseUrl.Port);
        await socket.SendAsync(Ascii(head + body));
        socket.Shutdown(SocketShutdown.Send);
        await fixture.EngineIdle();
        using var ok = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("hi", 2)));
        Assert.Equal(200, (int)ok.StatusCode);
    }
}
