namespace OrleansMixtral.Engine.Kv;

/// <summary>
/// Owns the backend's paged KV blocks: which sequence holds which block, and a prefix cache of blocks whose
/// sequences have finished. A block is identified by its tokens and by the chain of blocks before it (a hash
/// chain, verified token by token), so a request carrying a conversation's whole history finds the blocks
/// of its earlier turns and computes only what is new. The last, partly filled block of a finished sequence
/// is kept too and copied on reuse, so reuse is exact to the token, not to the block.
///
/// Policy: a sequence takes blocks for its prompt when admitted and one more block at a time as it grows
/// (<see cref="TryGrow"/>); when none is left the engine preempts a sequence (its blocks return to the prefix cache,
/// and it resumes from there). Unused cached blocks are evicted least recently used first; a request larger than the
/// whole cache is refused.
/// </summary>
public sealed class KvCacheManager
{
    sealed class Block
    {
        public int RefCount;
        public ulong Hash;        // identity of (parent chain, tokens) once registered
        public ulong ParentHash;
        public int TokenCount;    // tokens whose K/V the block holds
        public int[] Tokens = [];
        public bool IsFull;       // registered as a full block (immutable, shareable)
        public bool IsPartial;    // registered as the tail of a finished sequence (copied on reuse)
        public LinkedListNode<int>? Lru; // set while the block is unused but cached
    }

    const ulong Seed = 0x9E3779B97F4A7C15UL;
    readonly Block[] _blocks;
    readonly Stack<int> _free = new();
    readonly LinkedList<int> _lru = new();   // cached, unused blocks; first = least recently used
    readonly Dictionary<ulong, int> _fullByHash = new();
    readonly Dictionary<ulong, List<int>> _childrenByParent = new(); // cached blocks by the hash of the chain before them
    readonly Action<int, int, int> _copyBlock;

    public KvCacheManager(int blockCount, int blockSize, Action<int, int, int> copyBlock)
    {
        BlockSize = blockSize;
        _blocks = new Block[blockCount];
        for (var i = blockCount - 1; i >= 0; i--)
        {
            _blocks[i] = new Block { Tokens = new int[blockSize] };
            _free.Push(i);
        }
        _copyBlock = copyBlock;
    }

    public int BlockSize { get; }
    public int BlockCount => _blocks.Length;
    public int CapacityTokens => _blocks.Length * BlockSize;
    /// <summary>Blocks held by running sequences.</summary>
    public int BlocksInUse => _blocks.Length - _free.Count - _lru.Count;
    /// <summary>Blocks holding cached prefixes nobody uses right now (evictable).</summary>
    public int BlocksCached => _lru.Count;

    /// <summary>
    /// Takes blocks for the prompt of a sequence that may grow to <paramref name="totalTokens"/>, leaving at least
    /// <paramref name="reserveBlocks"/> blocks to take afterwards (room for running sequences to grow). Returns null when
    /// the blocks are not free now (try again after others finish); throws <see cref="KvCapacityException"/> when the
    /// whole sequence never could fit. Without <paramref name="reusePrefix"/> nothing comes from the prefix cache: the
    /// whole prompt is computed.
    /// </summary>
    public KvAllocation? TryAllocate(IReadOnlyList<int> prompt, int totalTokens, bool reusePrefix = true, int reserveBlocks = 0)
    {
        if ((totalTokens + BlockSize - 1) / BlockSize > _blocks.Length)
            throw new KvCapacityException($"the request needs {totalTokens} tokens of KV cache; the engine holds {CapacityTokens}");
        var needed = (prompt.Count + BlockSize - 1) / BlockSize;

        // Longest cached prefix, leaving at least one prompt token to compute (its logits start generation).
        var reusable = reusePrefix ? prompt.Count - 1 : 0;
        var matched = new List<int>();
        var parent = Seed;
        while ((matched.Count + 1) * BlockSize <= reusable)
        {
            var hash = HashBlock(parent, prompt, matched.Count * BlockSize, BlockSize);
            if (!_fullByHash.TryGetValue(hash, out var b) || !Holds(_blocks[b], parent, prompt, matched.Count * BlockSize, BlockSize)) break;
            matched.Add(b);
            parent = hash;
        }
        // Then the longest common prefix with any cached block that follows the matched chain (a finished
        // sequence's partly filled tail, or a full block the prompt leaves part-way): copied, not shared.
        var start = matched.Count * BlockSize;
        var partial = -1;
        var partialTokens = 0;
        if (_childrenByParent.TryGetValue(parent, out var candidates))
        {
            foreach (var c in candidates)
            {
                var n = CommonPrefix(_blocks[c], prompt, start, reusable - start);
                if (n > partialTokens) (partial, partialTokens) = (c, n);
            }
        }

        // Enough room? Matched blocks stop being evictable once taken, so count them out of the pool.
        var evictable = _lru.Count - matched.Count(b => _blocks[b].Lru is not null) - (partial >= 0 && _blocks[partial].Lru is not null ? 1 : 0);
        var fresh = needed - matched.Count;
        if (fresh + reserveBlocks > _free.Count + evictable) return null;

        foreach (var b in matched) Acquire(b);
        if (partial >= 0) Acquire(partial); // pinned while we copy from it
        var table = new List<int>(needed);
        table.AddRange(matched);
        for (var i = 0; i < fresh; i++) table.Add(TakeFreeBlock());
        if (partial >= 0)
        {
            var dst = table[matched.Count];
            _copyBlock(partial, dst, partialTokens);
            Release(partial);
        }
        return new KvAllocation(table, start + partialTokens, matched.Count);
    }

    /// <summary>Blocks a sequence could still take: free ones and unused cached prefixes.</summary>
    public int BlocksAvailable => _free.Count + _lru.Count;

    /// <summary>
    /// Adds blocks until the sequence holds room for <paramref name="tokens"/> tokens, evicting unused cached prefixes
    /// if it must. False when no block is left (the caller preempts a sequence and tries again).
    /// </summary>
    public bool TryGrow(KvAllocation a, int tokens)
    {
        while (a.Blocks.Count * BlockSize < tokens)
        {
            if (BlocksAvailable == 0) return false;
            a.Blocks.Add(TakeFreeBlock());
        }
        return true;
    }

    /// <summary>
    /// Records that the sequence's K/V now covers <paramref name="computedTokens"/> tokens of
    /// <paramref name="tokens"/>: blocks that just became full join the prefix cache.
    /// </summary>
    public void Advance(KvAllocation a, IReadOnlyList<int> tokens, int computedTokens)
    {
        while ((a.RegisteredBlocks + 1) * BlockSize <= computedTokens)
        {
            var index = a.RegisteredBlocks;
            var b = a.Blocks[index];
            var parent = index == 0 ? Seed : _blocks[a.Blocks[index - 1]].Hash;
            var hash = HashBlock(parent, tokens, index * BlockSize, BlockSize);
            var block = _blocks[b];
            if (!block.IsFull)
            {
                Fill(block, parent, hash, tokens, index * BlockSize, BlockSize);
                if (_fullByHash.TryAdd(hash, b))
                {
                    block.IsFull = true;
                    AddChild(parent, b);
                }
            }
            a.RegisteredBlocks++;
        }
        a.ComputedTokens = computedTokens;
    }

    /// <summary>Gives a finished sequence's blocks back; full ones and the partly filled tail stay cached.</summary>
    public void Free(KvAllocation a, IReadOnlyList<int> tokens)
    {
        var tailIndex = a.RegisteredBlocks;
        var tailTokens = a.ComputedTokens - tailIndex * BlockSize;
        if (tailTokens > 0 && tailIndex < a.Blocks.Count)
        {
            var b = a.Blocks[tailIndex];
            var block = _blocks[b];
            var parent = tailIndex == 0 ? Seed : _blocks[a.Blocks[tailIndex - 1]].Hash;
            if (!block.IsFull && !block.IsPartial && (tailIndex == 0 || _blocks[a.Blocks[tailIndex - 1]].IsFull))
            {
                Fill(block, parent, HashBlock(parent, tokens, tailIndex * BlockSize, tailTokens), tokens, tailIndex * BlockSize, tailTokens);
                block.IsPartial = true;
                AddChild(parent, b);
            }
        }
        foreach (var b in a.Blocks) Release(b);
        a.Blocks.Clear();
    }

    void Acquire(int b)
    {
        var block = _blocks[b];
        if (block.Lru is not null)
        {
            _lru.Remove(block.Lru);
            block.Lru = null;
        }
        block.RefCount++;
    }

    void Release(int b)
    {
        var block = _blocks[b];
        if (--block.RefCount > 0) return;
        if (block.IsFull || block.IsPartial) block.Lru = _lru.AddLast(b);
        else _free.Push(b);
    }

    int TakeFreeBlock()
    {
        int b;
        if (_free.Count > 0) b = _free.Pop();
        else
        {
            b = _lru.First!.Value; // least recently used cached prefix
            Forget(b);
        }
        var block = _blocks[b];
        block.RefCount = 1;
        block.TokenCount = 0;
        return b;
    }

    void Forget(int b)
    {
        var block = _blocks[b];
        if (block.Lru is not null) { _lru.Remove(block.Lru); block.Lru = null; }
        if (block.IsFull) _fullByHash.Remove(block.Hash);
        if ((block.IsFull || block.IsPartial) && _childrenByParent.TryGetValue(block.ParentHash, out var list))
        {
            list.Remove(b);
            if (list.Count == 0) _childrenByParent.Remove(block.ParentHash);
        }
        block.IsFull = block.IsPartial = false;
    }

    static void Fill(Block block, ulong parent, ulong hash, IReadOnlyList<int> tokens, int start, int count)
    {
        block.ParentHash = parent;
        block.Hash = hash;
        block.TokenCount = count;
        for (var i = 0; i < count; i++) block.Tokens[i] = tokens[start + i];
    }

    void AddChild(ulong parent, int b)
    {
        if (!_childrenByParent.TryGetValue(parent, out var list)) _childrenByParent[parent] = list = [];
        list.Add(b);
    }

    static int CommonPrefix(Block block, IReadOnlyList<int> tokens, int start, int max)
    {
        var n = Math.Min(block.TokenCount, max);
        var i = 0;
        while (i < n && block.Tokens[i] == tokens[start + i]) i++;
        return i;
    }

    static bool Holds(Block block, ulong parent, IReadOnlyList<int> tokens, int start, int count)
    {
        if (block.ParentHash != parent || block.TokenCount < count) return false;
        for (var i = 0; i < count; i++) if (block.Tokens[i] != tokens[start + i]) return false;
        return true;
    }

    static ulong HashBlock(ulong parent, IReadOnlyList<int> tokens, int start, int count)
    {
        var h = parent ^ ((ulong)count * 0xD6E8FEB86659FD93UL);
        for (var i = 0; i < count; i++)
        {
            h ^= (uint)tokens[start + i];
            h *= 0x100000001B3UL;
            h ^= h >> 29;
        }
        return h;
    }
}

/// <summary>The blocks of one running sequence and how much of its prompt came from the prefix cache.</summary>
public sealed class KvAllocation(List<int> blocks, int cachedTokens, int registeredBlocks)
{
    /// <summary>Logical block i → physical block.</summary>
    public List<int> Blocks { get; } = blocks;
    /// <summary>Prompt tokens whose K/V came from the cache (not computed).</summary>
    public int CachedTokens { get; } = cachedTokens;
    public int ComputedTokens { get; set; } = cachedTokens;
    public int RegisteredBlocks { get; set; } = registeredBlocks;
}
