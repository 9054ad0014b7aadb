// The tests share one cluster whose engine is shared state, and the machine has two cores: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
