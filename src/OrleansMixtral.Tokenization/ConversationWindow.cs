namespace OrleansMixtral.Tokenization;

/// <summary>
/// What the model sees of a multi-turn conversation: the exact token ids of its latest whole turns, and where each turn
/// and its reply begin. The one policy for a conversation that outgrows the model's context (the cluster's conversation
/// grain and the CLI's chat both use it):
/// <list type="bullet">
/// <item>a turn's prompt is the kept turns' ids exactly as they were (prompt, the ids the model generated, EOS), plus the
/// template ids of the new user message: the engine that served the last turn finds all of it in its prefix cache;</item>
/// <item>the prompt must leave room for the reply: the turn's max tokens, at most the reply reserve (and at most half of
/// the context), so a long conversation does not cut replies short;</item>
/// <item>when it does not, the oldest whole turns go, down to half of what the prompt may hold: the kept history then
/// stays the same for the following turns, which hit the prefix cache again (dropping one turn at a time would change
/// the prompt's start, and re-prefill all of it, on every turn);</item>
/// <item>the system message always stays: the template folds it into the first user turn, so the first kept turn is
/// encoded again, with it, when the turns before it go.</item>
/// </list>
/// Immutable: <see cref="NextTurn"/> gives the turn's prompt and the window it was built from, <see cref="TurnPrompt.Commit"/>
/// the window after the reply.
/// </summary>
/// <param name="Tokens">The kept turns' ids, BOS first: the next turn's prompt starts with them.</param>
/// <param name="TurnStarts">Where each kept turn begins in <paramref name="Tokens"/> (the first at 0, with BOS).</param>
/// <param name="ReplyStarts">Where each kept turn's reply (generated ids, then EOS) begins.</param>
/// <param name="DroppedTurns">The conversation's oldest turns that are no longer in the window.</param>
public sealed record ConversationWindow(int[] Tokens, int[] TurnStarts, int[] ReplyStarts, int DroppedTurns)
{
    /// <summary>The reply reserve when none is configured: a prompt leaves room for a reply of this many tokens (or its max tokens, if fewer).</summary>
    public const int DefaultReplyReserveTokens = 512;

    public static readonly ConversationWindow Empty = new([], [], [], 0);

    public int KeptTurns => TurnStarts.Length;

    /// <summary>
    /// The prompt of the next turn (<paramref name="userMessage"/>), dropping the oldest turns when the window leaves too
    /// little room for the reply.
    /// </summary>
    /// <param name="keptUserMessages">The user message of each kept turn, oldest first (the first kept turn is encoded
    /// again, with the system message, when the turns before it go).</param>
    /// <param name="maxTokens">The most tokens the reply may have (the request's; the prompt's room may lower it).</param>
    /// <exception cref="ContextLengthExceededException">The new message (with the system message) leaves no room for even one token.</exception>
    public TurnPrompt NextTurn(MistralTokenizer tokenizer, string? system, IReadOnlyList<string> keptUserMessages, string userMessage,
        int maxTokens, int contextLength, int replyReserveTokens = DefaultReplyReserveTokens)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (keptUserMessages.Count != KeptTurns)
            throw new ArgumentException($"{keptUserMessages.Count} user messages for {KeptTurns} kept turns", nameof(keptUserMessages));
        var reserve = Math.Clamp(Math.Min(maxTokens, replyReserveTokens), 1, Math.Max(1, contextLength / 2));
        var budget = contextLength - reserve; // the most the prompt may hold and still leave the reserve

        // "[INST] {message} [/INST]" after a reply's EOS is a segment of its own in the template, so its ids do not depend
        // on the turns before it: the template of the message alone, less its BOS.
        var followUp = KeptTurns > 0 ? tokenizer.EncodeChat([new ChatMessage(ChatRole.User, userMessage)])[1..] : null;
        if (followUp is not null && Tokens.Length + followUp.Length <= budget)
            return Prompt(this, 0, followUp);

        // Over the budget: drop the fewest oldest turns that bring the prompt down to half of it (else to the budget,
        // else all of them).
        var target = budget / 2;
        (ConversationWindow Window, int Dropped)? withinBudget = null;
        for (var drop = 1; drop < KeptTurns; drop++)
        {
            var kept = DropOldest(tokenizer, system, keptUserMessages[drop], drop);
            var length = kept.Tokens.Length + followUp!.Length;
            if (length <= target) return Prompt(kept, drop, followUp);
            if (length <= budget) withinBudget ??= (kept, drop);
        }
        if (withinBudget is { } w) return Prompt(w.Window, w.Dropped, followUp!);

        // Nothing kept (a first turn, or every turn dropped): the system message and the new message alone.
        var first = tokenizer.EncodeChat(system is null
            ? [new ChatMessage(ChatRole.User, userMessage)]
            : [new ChatMessage(ChatRole.System, system), new ChatMessage(ChatRole.User, userMessage)]);
        if (first.Length >= contextLength)
            throw new ContextLengthExceededException(
                $"the message does not fit the model's context of {contextLength} tokens ({first.Length} tokens{(system is null ? "" : " with the system message")}, and the reply needs at least one)");
        return Prompt(new ConversationWindow([], [], [], DroppedTurns + KeptTurns), KeptTurns, first);

        TurnPrompt Prompt(ConversationWindow window, int dropped, int[] userIds)
        {
            var ids = new int[window.Tokens.Length + userIds.Length];
            window.Tokens.CopyTo(ids, 0);
            userIds.CopyTo(ids, window.Tokens.Length);
            return new TurnPrompt(window, ids, window.Tokens.Length, dropped, Math.Max(1, Math.Min(maxTokens, contextLength - ids.Length)));
        }
    }

    /// <summary>
    /// The window without its <paramref name="drop"/> oldest turns: the first turn left is encoded again with the system
    /// message (BOS, "[INST] {system}\n\n{user} [/INST]"), then its reply and every later turn as they were.
    /// </summary>
    ConversationWindow DropOldest(MistralTokenizer tokenizer, string? system, string firstUserMessage, int drop)
    {
        var head = tokenizer.EncodeChat(system is null
            ? [new ChatMessage(ChatRole.User, firstUserMessage)]
            : [new ChatMessage(ChatRole.System, system), new ChatMessage(ChatRole.User, firstUserMessage)]);
        var shift = ReplyStarts[drop] - head.Length;
        var tokens = new int[Tokens.Length - shift];
        head.CopyTo(tokens, 0);
        Array.Copy(Tokens, ReplyStarts[drop], tokens, head.Length, Tokens.Length - ReplyStarts[drop]);
        var turnStarts = new int[KeptTurns - drop];
        var replyStarts = new int[KeptTurns - drop];
        replyStarts[0] = head.Length;
        for (var i = 1; i < turnStarts.Length; i++)
        {
            turnStarts[i] = TurnStarts[drop + i] - shift;
            replyStarts[i] = ReplyStarts[drop + i] - shift;
        }
        return new ConversationWindow(tokens, turnStarts, replyStarts, DroppedTurns + drop);
    }

    /// <summary>
    /// A window rebuilt from a conversation's messages by rendering them with the template (for a conversation stored
    /// without its turns' ids): the replies' ids are then their text encoded again, not the ids the model generated, so the
    /// first turn built on it finds less in the prefix cache; every turn after that is exact again.
    /// </summary>
    public static ConversationWindow FromMessages(MistralTokenizer tokenizer, string? system, IReadOnlyList<(string User, string Assistant)> turns, int droppedTurns)
    {
        if (turns.Count == 0) return Empty with { DroppedTurns = droppedTurns };
        var messages = new List<ChatMessage>();
        if (system is not null) messages.Add(new ChatMessage(ChatRole.System, system));
        var turnStarts = new int[turns.Count];
        var replyStarts = new int[turns.Count];
        for (var i = 0; i < turns.Count; i++)
        {
            messages.Add(new ChatMessage(ChatRole.User, turns[i].User));
            replyStarts[i] = tokenizer.EncodeChat(messages).Length;
            messages.Add(new ChatMessage(ChatRole.Assistant, turns[i].Assistant));
            if (i + 1 < turns.Count) turnStarts[i + 1] = tokenizer.EncodeChat(messages).Length; // a reply ends with EOS: a segment boundary
        }
        return new ConversationWindow(tokenizer.EncodeChat(messages), turnStarts, replyStarts, droppedTurns);
    }
}

/// <summary>A turn's prompt as <see cref="ConversationWindow.NextTurn"/> built it.</summary>
/// <param name="Window">The kept turns the prompt starts with (after any dropped).</param>
/// <param name="Ids">The whole prompt: the window's ids, then the new user message's.</param>
/// <param name="UserStart">Where the new user message begins in <paramref name="Ids"/>.</param>
/// <param name="NewlyDropped">Turns this prompt dropped (the window's <see cref="ConversationWindow.DroppedTurns"/> counts them all).</param>
/// <param name="MaxTokens">The reply's limit: the request's, lowered to the context's room.</param>
public sealed record TurnPrompt(ConversationWindow Window, int[] Ids, int UserStart, int NewlyDropped, int MaxTokens)
{
    /// <summary>The window after this turn's reply: its prompt, the generated ids and EOS (the template closes every reply with it).</summary>
    public ConversationWindow Commit(IReadOnlyList<int> output, int eosId)
    {
        var tokens = new int[Ids.Length + output.Count + 1];
        Ids.CopyTo(tokens, 0);
        for (var i = 0; i < output.Count; i++) tokens[Ids.Length + i] = output[i];
        tokens[^1] = eosId;
        return new ConversationWindow(tokens, [.. Window.TurnStarts, UserStart], [.. Window.ReplyStarts, Ids.Length], Window.DroppedTurns);
    }
}

/// <summary>A message that cannot fit the model's context, whatever is dropped.</summary>
public sealed class ContextLengthExceededException(string message) : Exception(message);
