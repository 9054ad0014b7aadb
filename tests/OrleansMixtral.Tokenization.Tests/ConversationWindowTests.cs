namespace OrleansMixtral.Tokenization.Tests;

/// <summary>
/// The context policy of multi-turn conversations (<see cref="ConversationWindow"/>): exact ids turn after turn, room for
/// the reply, whole oldest turns dropped down to half of the budget with the system message kept, and a kept history that
/// stays the same afterwards.
/// </summary>
public sealed class ConversationWindowTests
{
    static readonly MistralTokenizer Tokenizer = TestTokenizer.Instance;
    const string System = "You are a patient guide to old cities.";
    const int Eos = 2;

    /// <summary>A reply of <paramref name="length"/> made-up ids (what the model generated; never re-encoded).</summary>
    static int[] Reply(int length, int seed) => [.. Enumerable.Range(0, length).Select(i => 1000 + (seed * 37 + i) % 5000)];

    static int[] Ids(params ChatMessage[] messages) => Tokenizer.EncodeChat(messages);
    static ChatMessage U(string text) => new(ChatRole.User, text);
    static ChatMessage S(string text) => new(ChatRole.System, text);

    [Fact]
    public void Turns_that_fit_build_on_the_exact_ids_of_the_turns_before()
    {
        var window = ConversationWindow.Empty;
        var users = new List<string>();
        var first = window.NextTurn(Tokenizer, System, users, "Tell me about Rome.", maxTokens: 50, contextLength: 1024);
        Assert.Equal(Ids(S(System), U("Tell me about Rome.")), first.Ids);
        Assert.Equal(50, first.MaxTokens);
        window = first.Commit(Reply(50, 1), Eos);
        users.Add("Tell me about Rome.");
        Assert.Equal([.. first.Ids, .. Reply(50, 1), Eos], window.Tokens);

        var second = window.NextTurn(Tokenizer, System, users, "And Athens?", maxTokens: 50, contextLength: 1024);
        Assert.Equal([.. window.Tokens, .. Ids(U("And Athens?"))[1..]], second.Ids);
        Assert.Equal(0, second.NewlyDropped);
        Assert.Equal(0, second.Window.DroppedTurns);
        var after = second.Commit(Reply(10, 2), Eos);
        Assert.Equal([0, first.Ids.Length + 51], after.TurnStarts);
        Assert.Equal([first.Ids.Length, second.Ids.Length], after.ReplyStarts);
    }

    [Fact]
    public void A_conversation_that_outgrows_the_context_drops_its_oldest_whole_turns_down_to_half_the_budget_and_keeps_the_system_message()
    {
        const int context = 1024, reply = 200;
        var window = ConversationWindow.Empty;
        var users = new List<string>();
        TurnPrompt prompt;
        var turn = 0;
        while (true)
        {
            var message = $"Tell me more about the city, part {turn}.";
            prompt = window.NextTurn(Tokenizer, System, users, message, reply, context);
            // Every prompt leaves the whole reply room: no reply is cut short by the context.
            Assert.True(prompt.Ids.Length + reply <= context, $"turn {turn}: {prompt.Ids.Length} prompt tokens leave less than {reply}");
            Assert.Equal(reply, prompt.MaxTokens);
            if (prompt.NewlyDropped > 0) break;
            window = prompt.Commit(Reply(reply, turn), Eos);
            users.Add(message);
            turn++;
            Assert.True(turn < 10, "nothing was ever dropped");
        }
        var dropped = prompt.NewlyDropped;
        Assert.Equal(dropped, prompt.Window.DroppedTurns);
        Assert.InRange(dropped, 1, turn); // whole turns, not all of them here
        // Down to half of what the prompt may hold (context - reply): room for the next turns without dropping again.
        Assert.True(prompt.Ids.Length <= (context - reply) / 2, $"{prompt.Ids.Length} prompt tokens after dropping");
        // The first kept turn carries the system message; its reply and every later turn are the ids as they were.
        var head = Ids(S(System), U(users[dropped]));
        Assert.Equal(head, prompt.Ids[..head.Length]);
        Assert.Equal(window.Tokens[window.ReplyStarts[dropped]..], prompt.Window.Tokens[head.Length..]);
        Assert.Equal(Ids(U($"Tell me more about the city, part {turn}."))[1..], prompt.Ids[prompt.UserStart..]);

        // The next turn builds on the kept history unchanged (the engine's prefix cache holds all of it).
        var kept = prompt.Commit(Reply(reply, turn), Eos);
        users.Add($"Tell me more about the city, part {turn}.");
        var next = kept.NextTurn(Tokenizer, System, users[dropped..], "Thank you.", reply, context);
        Assert.Equal(0, next.NewlyDropped);
        Assert.Equal(dropped, next.Window.DroppedTurns);
        Assert.Equal(kept.Tokens, next.Ids[..kept.Tokens.Length]);
    }

    [Fact]
    public void The_reply_reserve_is_the_max_tokens_at_most_the_configured_reserve_and_half_the_context()
    {
        // A long history of one turn, and a short next message.
        var users = new List<string> { "Hello." };
        var start = ConversationWindow.Empty.NextTurn(Tokenizer, null, [], "Hello.", 500, 1024);
        var window = start.Commit(Reply(560, 0), Eos); // ≈ 570 tokens
        // max_tokens 100: room for 100 is enough, nothing dropped; the reply may still use all the room left.
        var small = window.NextTurn(Tokenizer, null, users, "More.", maxTokens: 100, contextLength: 1024);
        Assert.Equal(0, small.NewlyDropped);
        Assert.Equal(100, small.MaxTokens);
        // max_tokens 2000 (as a request without max_tokens sends: the whole context): the reserve is 512, so this drops.
        var large = window.NextTurn(Tokenizer, null, users, "More.", maxTokens: 2000, contextLength: 1024);
        Assert.Equal(1, large.NewlyDropped);
        Assert.Equal(1024 - large.Ids.Length, large.MaxTokens);
        // A smaller configured reserve keeps the turn.
        Assert.Equal(0, window.NextTurn(Tokenizer, null, users, "More.", 2000, 1024, replyReserveTokens: 300).NewlyDropped);
    }

    [Fact]
    public void A_message_that_cannot_fit_even_alone_is_refused()
    {
        var huge = string.Join(" ", Enumerable.Repeat("river", 1100));
        var e = Assert.Throws<ContextLengthExceededException>(() => ConversationWindow.Empty.NextTurn(Tokenizer, System, [], huge, 10, 1024));
        Assert.Contains("context of 1024 tokens", e.Message);
        // One that fits but leaves less than the reserve still runs, with the room there is.
        var long_ = string.Join(" ", Enumerable.Repeat("river", 900));
        var p = ConversationWindow.Empty.NextTurn(Tokenizer, null, [], long_, 512, 1024);
        Assert.Equal(1024 - p.Ids.Length, p.MaxTokens);
    }

    [Fact]
    public void A_window_rebuilt_from_messages_marks_each_turn_and_reply()
    {
        var turns = new List<(string, string)> { ("Hello.", "Hi there."), ("How are you?", "Well, thank you.") };
        var w = ConversationWindow.FromMessages(Tokenizer, System, turns, droppedTurns: 3);
        var all = Ids(S(System), U("Hello."), new ChatMessage(ChatRole.Assistant, "Hi there."), U("How are you?"), new ChatMessage(ChatRole.Assistant, "Well, thank you."));
        Assert.Equal(all, w.Tokens);
        Assert.Equal(3, w.DroppedTurns);
        Assert.Equal(0, w.TurnStarts[0]);
        Assert.Equal(Ids(S(System), U("Hello.")).Length, w.ReplyStarts[0]);
        Assert.Equal(Eos, w.Tokens[w.TurnStarts[1] - 1]);
        Assert.Equal(Eos, w.Tokens[^1]);
    }
}
