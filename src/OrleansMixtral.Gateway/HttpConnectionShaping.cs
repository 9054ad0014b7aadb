using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace OrleansMixtral.Gateway;

/// <summary>
/// Kestrel connection middleware (HTTP/1.x on each listening endpoint) for what happens below the gateway's own code:
/// <list type="bullet">
/// <item><b>Kestrel's own refusals in OpenAI's shape.</b> A request Kestrel cannot parse (bad header bytes, no Host, a
/// <c>*</c> target for GET, an unknown HTTP version) or that is over its limits (request line: 414, headers: 431) is
/// answered by Kestrel itself, before any middleware, with a status line and an empty body. Such a response (4xx/5xx,
/// <c>Content-Length: 0</c>, <c>Connection: close</c>, no content type) is rewritten on its way out into the same
/// response with an OpenAI error body. Over TLS this layer sees only ciphertext and rewrites nothing; HTTP/2 refuses with
/// frames, which have no body to give.</item>
/// <item><b>A body cut short by a half-close is a 400, not silence.</b> Kestrel takes a client's FIN as the end of the
/// connection: it aborts the request and, when the FIN comes in the middle of a request body, closes without an answer.
/// While a request's declared body has not been read to its end, this layer keeps the FIN from Kestrel; when the body
/// read then finds nothing more will come, the gateway is told (<see cref="BodyWatch.Ended"/>), answers 400 with
/// <c>Connection: close</c>, and Kestrel closes the connection after it. A FIN at any other time (between requests, after
/// the body, during a streamed reply) reaches Kestrel at once, as before: a client that leaves still cancels its
/// generation.</item>
/// </list>
/// </summary>
public sealed class HttpConnectionShaping
{
    readonly ConcurrentDictionary<string, Connection> _connections = new();

    /// <summary>Adds the middleware to a listening endpoint (cleartext HTTP/1.x: the only kind the gateway's URLs configure).</summary>
    public void Apply(ListenOptions listen) => listen.Use(next => async context =>
    {
        var connection = new Connection(context);
        _connections[context.ConnectionId] = connection;
        try { await next(connection.Context); }
        finally
        {
            _connections.TryRemove(context.ConnectionId, out _);
            connection.Ended();
        }
    });

    /// <summary>Called by the gateway's first middleware for every request: tracks where the request is (body, response).</summary>
    public void BeginRequest(HttpContext ctx)
    {
        if (!_connections.TryGetValue(ctx.Connection.Id, out var connection)) return; // not through Kestrel (other hosts)
        if (!IsHttp1(ctx))
        {
            connection.Multiplexed(); // HTTP/2 (h2c, or TLS with ALPN): requests share the connection; a FIN is the connection's end
            return;
        }
        var hasBody = ctx.Request.ContentLength > 0 || (ctx.Request.ContentLength is null && ctx.Request.Headers.TransferEncoding.Count > 0);
        connection.BeginRequest(hasBody);
        ctx.Response.OnStarting(static c => { ((Connection)c).ResponseStarted(); return Task.CompletedTask; }, connection);
        ctx.Response.OnCompleted(static c => { ((Connection)c).EndRequest(); return Task.CompletedTask; }, connection);
    }

    /// <summary>
    /// Watches the reading of <paramref name="ctx"/>'s body: <see cref="BodyWatch.Ended"/> fires when the client half-closed
    /// before the body's end (the pending read is then cancelled). Dispose it when the body is read, saying whether it was
    /// read to its end.
    /// </summary>
    public BodyWatch WatchBody(HttpContext ctx) =>
        new(_connections.TryGetValue(ctx.Connection.Id, out var connection) && IsHttp1(ctx) ? connection : null, ctx);

    static bool IsHttp1(HttpContext ctx) => HttpProtocol.IsHttp11(ctx.Request.Protocol) || HttpProtocol.IsHttp10(ctx.Request.Protocol);

    /// <summary>See <see cref="WatchBody"/>.</summary>
    public sealed class BodyWatch : IDisposable
    {
        readonly Connection? _connection;
        readonly CancellationTokenRegistration _cancelRead;

        internal BodyWatch(Connection? connection, HttpContext ctx)
        {
            _connection = connection;
            if (connection is null) return;
            _cancelRead = connection.InputEnded.Register(static c => ((HttpContext)c!).Request.BodyReader.CancelPendingRead(), ctx);
        }

        /// <summary>The client half-closed before the end of the body: no more of it will come.</summary>
        public bool Ended => _connection?.InputEnded.IsCancellationRequested ?? false;

        /// <summary>Set when the whole body was read.</summary>
        public bool Complete { get; set; }

        public void Dispose()
        {
            _cancelRead.Dispose();
            _connection?.BodyRead(Complete);
        }
    }

    /// <summary>
    /// One connection: the transport Kestrel sees (input that may hold back the end of input, output that gives bare
    /// error responses a body) and the state that decides when Kestrel learns that the client half-closed.
    /// </summary>
    internal sealed class Connection
    {
        readonly object _lock = new();
        readonly CancellationTokenSource _closed = new();     // the ConnectionClosed Kestrel sees
        readonly CancellationTokenSource _inputEnded = new(); // to the gateway: the body will not be completed
        readonly CancellationTokenRegistration _innerClosed;
        TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
        bool _finArrived, _finReleased, _keepHeld, _readPending, _multiplexed;
        bool _dataSinceRequestEnd, _requestKnown, _bodyPending, _responseStarted;

        public Connection(ConnectionContext inner)
        {
            Context = new ShapedContext(inner, new DuplexPipe(new HoldingReader(inner.Transport.Input, this), new ShapingWriter(inner.Transport.Output)), _closed.Token);
            _innerClosed = inner.ConnectionClosed.UnsafeRegister(static c => ((Connection)c!).FinArrived(), this);
        }

        public ConnectionContext Context { get; }
        public CancellationToken InputEnded => _inputEnded.Token;
        public bool FinVisible { get { lock (_lock) return _finReleased; } }

        /// <summary>
        /// Whether a FIN now must wait: a request is under way whose declared body is not read yet, or whose head Kestrel
        /// has read but the gateway has not seen yet (then <see cref="ReleaseUnlessKnownAsync"/> bounds the wait).
        /// </summary>
        bool MustHold() => !_multiplexed && (!_responseStarted && (_bodyPending || (_dataSinceRequestEnd && !_requestKnown)) || _keepHeld);

        public void Multiplexed()
        {
            lock (_lock)
            {
                _multiplexed = true;
                if (!_finArrived || _finReleased) return;
            }
            Release();
        }

        /// <summary>
        /// The transport saw the client's FIN (or the connection close). When no request is under way (or a read is in
        /// progress) the next read decides, when it sees the end of input and whether a request came before it: Kestrel
        /// always reads for the next request (the FIN may come before its first read of a request already sent). During a
        /// request its state does.
        /// </summary>
        public void FinArrived()
        {
            lock (_lock)
            {
                _finArrived = true;
                if (_finReleased || _readPending || (!_requestKnown && !_dataSinceRequestEnd)) return;
                if (MustHold())
                {
                    if (!_requestKnown && !_keepHeld) _ = ReleaseUnlessKnownAsync();
                    return;
                }
            }
            Release();
        }

        /// <summary>A FIN held for a request the gateway has not seen yet is released if it still has not within a second.</summary>
        async Task ReleaseUnlessKnownAsync()
        {
            await Task.Delay(1000);
            lock (_lock)
            {
                if (_finReleased || _requestKnown || _keepHeld) return;
            }
            Release();
        }

        public void ReadStarted()
        {
            lock (_lock) _readPending = true;
        }

        /// <summary>A read returns (with data: a request, or more of one, is coming).</summary>
        public void ReadReturned(bool data)
        {
            lock (_lock)
            {
                _readPending = false;
                if (data) _dataSinceRequestEnd = true;
            }
        }

        public void BeginRequest(bool hasBody)
        {
            lock (_lock)
            {
                _requestKnown = true;
                _bodyPending = hasBody;
                _responseStarted = false;
                if (!_finArrived || _finReleased || MustHold()) return;
            }
            Release();
        }

        public void ResponseStarted()
        {
            lock (_lock) _responseStarted = true;
        }

        public void BodyRead(bool complete)
        {
            lock (_lock)
            {
                _bodyPending = false;
                // Cut short: the FIN stays held while the 400 goes out (with Connection: close, so Kestrel then ends the
                // connection itself instead of reading on).
                if (!complete && _inputEnded.IsCancellationRequested) _keepHeld = true;
                if (!_finArrived || _finReleased || MustHold()) return;
            }
            Release();
        }

        public void EndRequest()
        {
            lock (_lock)
            {
                _requestKnown = false;
                _dataSinceRequestEnd = false;
                _bodyPending = false;
                _responseStarted = false;
                if (!_finArrived || _finReleased || MustHold()) return;
            }
            Release();
        }

        /// <summary>
        /// A read found the end of input and nothing new before it: release the FIN to Kestrel, or, while it must be held,
        /// tell the gateway that the body it reads can never be completed (the read waits until cancelled or released).
        /// </summary>
        public void ReadFoundEnd()
        {
            bool release, bodyCut = false, unknown = false;
            lock (_lock)
            {
                _finArrived = true;
                _readPending = false;
                release = !_finReleased && !MustHold();
                if (!release && !_finReleased)
                {
                    bodyCut = _bodyPending;
                    unknown = !_requestKnown && !_keepHeld;
                }
            }
            if (release) Release();
            else if (bodyCut) _inputEnded.Cancel();
            else if (unknown) _ = ReleaseUnlessKnownAsync();
        }

        /// <summary>Waits until the FIN is released to Kestrel (true) or a pending read is cancelled (false).</summary>
        public async Task<bool> WaitAsync(CancellationToken cancellationToken)
        {
            Task wake;
            lock (_lock)
            {
                if (_finReleased) return true;
                wake = _wake.Task;
            }
            await wake.WaitAsync(cancellationToken);
            lock (_lock) return _finReleased;
        }

        public void CancelPendingRead()
        {
            TaskCompletionSource wake;
            lock (_lock)
            {
                wake = _wake;
                _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            wake.TrySetResult();
        }

        /// <summary>Kestrel learns of the FIN: its ConnectionClosed fires and held reads see the end of input.</summary>
        void Release()
        {
            TaskCompletionSource wake;
            lock (_lock)
            {
                if (_finReleased) return;
                _finReleased = true;
                wake = _wake;
            }
            wake.TrySetResult();
            ThreadPool.UnsafeQueueUserWorkItem(static c => ((Connection)c).CancelClosed(), this, preferLocal: false);
        }

        void CancelClosed()
        {
            try { _closed.Cancel(); }
            catch (ObjectDisposedException) { }
        }

        /// <summary>Kestrel is done with the connection.</summary>
        public void Ended()
        {
            _innerClosed.Dispose();
            lock (_lock) _finReleased = true;
            _wake.TrySetResult();
            CancelClosed();
        }
    }

    sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }

    /// <summary>The connection as Kestrel's HTTP layer sees it: the shaped transport and a ConnectionClosed that may wait.</summary>
    sealed class ShapedContext(ConnectionContext inner, IDuplexPipe transport, CancellationToken closed) : ConnectionContext
    {
        public override string ConnectionId { get => inner.ConnectionId; set => inner.ConnectionId = value; }
        public override IFeatureCollection Features => inner.Features;
        public override IDictionary<object, object?> Items { get => inner.Items; set => inner.Items = value; }
        public override IDuplexPipe Transport { get; set; } = transport;
        public override CancellationToken ConnectionClosed { get => closed; set => throw new NotSupportedException(); }
        public override EndPoint? LocalEndPoint { get => inner.LocalEndPoint; set => inner.LocalEndPoint = value; }
        public override EndPoint? RemoteEndPoint { get => inner.RemoteEndPoint; set => inner.RemoteEndPoint = value; }
        public override void Abort(ConnectionAbortedException abortReason) => inner.Abort(abortReason);
        public override void Abort() => inner.Abort();
        public override ValueTask DisposeAsync() => ValueTask.CompletedTask; // the transport connection is Kestrel's to dispose
    }

    /// <summary>The connection's input; at the end of input while <see cref="Connection"/> holds the FIN, reads wait instead of ending.</summary>
    sealed class HoldingReader(PipeReader inner, Connection connection) : PipeReader
    {
        SequencePosition _examined; // how far the last AdvanceTo examined: a buffer that ends there holds nothing new
        bool _hasExamined;

        bool Unexamined(in ReadOnlySequence<byte> buffer) => !buffer.IsEmpty && !(_hasExamined && buffer.End.Equals(_examined));

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            connection.ReadStarted();
            while (true)
            {
                ReadResult result;
                try { result = await inner.ReadAsync(cancellationToken); }
                catch
                {
                    connection.ReadReturned(data: false);
                    throw;
                }
                if (!result.IsCompleted || connection.FinVisible) return Returned(result);
                // The input has ended; while the FIN is held the reader is not to know.
                if (Unexamined(result.Buffer)) return Returned(new ReadResult(result.Buffer, result.IsCanceled, isCompleted: false));
                // Nothing new, and nothing more will come: hold the read here until the FIN is released (then it sees the
                // end) or the read is cancelled (the gateway answering 400).
                Examined(result.Buffer);
                var released = connection.WaitAsync(cancellationToken); // waiting before the gateway is told, which may cancel it at once
                connection.ReadFoundEnd();
                bool wasReleased;
                try { wasReleased = await released; }
                catch
                {
                    connection.ReadReturned(data: false);
                    throw;
                }
                if (wasReleased) continue;
                var again = await inner.ReadAsync(CancellationToken.None);
                return Returned(new ReadResult(again.Buffer, isCanceled: true, isCompleted: false));
            }
        }

        public override bool TryRead(out ReadResult result)
        {
            if (!inner.TryRead(out result)) return false;
            if (!result.IsCompleted || connection.FinVisible)
            {
                result = Returned(result);
                return true;
            }
            if (Unexamined(result.Buffer))
            {
                result = Returned(new ReadResult(result.Buffer, result.IsCanceled, isCompleted: false));
                return true;
            }
            Examined(result.Buffer);
            connection.ReadFoundEnd();
            result = default;
            return false;
        }

        /// <summary>Gives back a buffer not passed on: nothing consumed, all of it seen.</summary>
        void Examined(in ReadOnlySequence<byte> buffer)
        {
            inner.AdvanceTo(buffer.Start, buffer.End);
            _examined = buffer.End;
            _hasExamined = true;
        }

        ReadResult Returned(ReadResult result)
        {
            connection.ReadReturned(Unexamined(result.Buffer));
            return result;
        }

        public override void AdvanceTo(SequencePosition consumed)
        {
            _examined = consumed;
            _hasExamined = true;
            inner.AdvanceTo(consumed);
        }

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            _examined = examined;
            _hasExamined = true;
            inner.AdvanceTo(consumed, examined);
        }

        public override void CancelPendingRead()
        {
            inner.CancelPendingRead();
            connection.CancelPendingRead();
        }

        public override void Complete(Exception? exception = null) => inner.Complete(exception);
        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
    }

    /// <summary>The connection's output; a bare error response of Kestrel's gets an OpenAI error body.</summary>
    sealed class ShapingWriter(PipeWriter inner) : PipeWriter
    {
        Memory<byte> _memory;

        public override Memory<byte> GetMemory(int sizeHint = 0) => _memory = inner.GetMemory(sizeHint);
        public override Span<byte> GetSpan(int sizeHint = 0) => (_memory = inner.GetMemory(sizeHint)).Span;

        public override void Advance(int bytes)
        {
            if (bytes > 0 && bytes <= _memory.Length && WithBody(_memory.Span[..bytes]) is { } response)
            {
                // Not advanced yet: the bytes written are replaced (a fresh GetMemory starts at the same place).
                response.CopyTo(inner.GetMemory(response.Length));
                inner.Advance(response.Length);
            }
            else inner.Advance(bytes);
            _memory = default;
        }

        public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default) =>
            inner.WriteAsync(WithBody(source.Span) is { } response ? response : source, cancellationToken);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);
        public override void CancelPendingFlush() => inner.CancelPendingFlush();
        public override void Complete(Exception? exception = null) => inner.Complete(exception);
        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;
        public override long UnflushedBytes => inner.UnflushedBytes;
    }

    static readonly byte[] ContentLengthZero = "\r\nContent-Length: 0\r\n"u8.ToArray();
    static readonly byte[] ConnectionClose = "\r\nConnection: close\r\n"u8.ToArray();
    static readonly byte[] ContentType = "\r\nContent-Type:"u8.ToArray();

    /// <summary>
    /// <paramref name="head"/> again with an OpenAI error body, when it is the whole of a bare error response of Kestrel's
    /// (status 4xx/5xx, Content-Length 0, Connection: close, no content type); else null.
    /// </summary>
    internal static byte[]? WithBody(ReadOnlySpan<byte> head)
    {
        if (head.Length is < 40 or > 4096 || !(head.StartsWith("HTTP/1.1 "u8) || head.StartsWith("HTTP/1.0 "u8)) || !head.EndsWith("\r\n\r\n"u8))
            return null;
        var status = 0;
        for (var i = 9; i < 12; i++)
        {
            if (head[i] is < (byte)'0' or > (byte)'9') return null;
            status = status * 10 + head[i] - '0';
        }
        if (status < 400 || head.IndexOf(ContentLengthZero) < 0 || head.IndexOf(ConnectionClose) < 0 || head.IndexOf(ContentType) >= 0) return null;

        var (message, code) = status switch
        {
            400 => ("the request is malformed: its request line, a header or its framing could not be parsed", "invalid_request"),
            405 => ("this method is not allowed on this target (only OPTIONS takes the * target)", "method_not_allowed"),
            408 => ("the request headers did not arrive in time", "request_timeout"),
            411 => ("this request needs a Content-Length", "length_required"),
            413 => ("the request is larger than this server's limit", "request_too_large"),
            414 => ("the request line (method, path and query) is longer than this server's limit", "request_uri_too_long"),
            431 => ("the request headers are larger than this server's limit", "request_headers_too_large"),
            501 => ("this request uses a feature this server does not implement (such as a Transfer-Encoding other than chunked)", "not_implemented"),
            505 => ("this HTTP version is not supported (HTTP/1.0, 1.1)", "http_version_not_supported"),
            _ => ("the server refused the request", "error"),
        };
        var body = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(body, OpenAiResponses.JsonOptions))
        {
            w.WriteStartObject();
            w.WriteStartObject("error");
            w.WriteString("message", message);
            w.WriteString("type", OpenAiResponses.ErrorType(status));
            w.WriteNull("param");
            w.WriteString("code", code);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        var at = head.IndexOf(ContentLengthZero);
        var replacement = Encoding.ASCII.GetBytes($"\r\nContent-Type: application/json\r\nContent-Length: {body.WrittenCount}\r\n");
        var response = new byte[head.Length - ContentLengthZero.Length + replacement.Length + body.WrittenCount];
        head[..at].CopyTo(response);
        replacement.CopyTo(response.AsSpan(at));
        head[(at + ContentLengthZero.Length)..].CopyTo(response.AsSpan(at + replacement.Length));
        body.WrittenSpan.CopyTo(response.AsSpan(response.Length - body.WrittenCount));
        return response;
    }
}
