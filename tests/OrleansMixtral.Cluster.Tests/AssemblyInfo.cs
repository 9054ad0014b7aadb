// The clusters of different test classes would compete for the two cores; run the classes one after another.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
