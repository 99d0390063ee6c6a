using System.Numerics;
using NormKit.Lab.Data;

namespace NormKit.Lab.Training;

/// <summary>
/// Where a run's examples come from. A batch is <see cref="Rows"/> labels (the rows of the
/// model's output: one per image, one per token of text) and <see cref="Inputs"/> input numbers.
/// </summary>
public interface IBatches<T> where T : unmanaged
{
    /// <summary>Labels (output rows) per batch.</summary>
    int Rows { get; }
    /// <summary>Input numbers per batch.</summary>
    int Inputs { get; }
    /// <summary>Examples (images, sequences) per batch, for throughput.</summary>
    int Examples { get; }
}

/// <summary>Training batches drawn at random.</summary>
public interface ITrainingBatches<T> : IBatches<T> where T : unmanaged
{
    /// <summary>Draws the next batch with <paramref name="rng"/> into x and y.</summary>
    void Next(Rng rng, Span<T> x, Span<byte> y);
}

/// <summary>A fixed evaluation set, in batches of the same size.</summary>
public interface IEvaluationBatches<T> : IBatches<T> where T : unmanaged
{
    int Count { get; }
    /// <summary>Writes batch <paramref name="index"/> (0..Count-1) into x and y.</summary>
    void Get(int index, Span<T> x, Span<byte> y);
}

/// <summary>Images and labels of a Fashion-MNIST split.</summary>
public static class Images
{
    /// <summary>Batches of <paramref name="batch"/> images drawn uniformly with replacement.</summary>
    public static ITrainingBatches<T> Random<T>(FashionMnist.Split split, int batch) where T : unmanaged, IFloatingPointIeee754<T> =>
        new RandomImages<T>(split, batch);

    /// <summary>
    /// Batches of <paramref name="batch"/> images walking through shuffled epochs: every image once
    /// per epoch, a new order (Fisher-Yates with the run's random numbers) each time; a batch that
    /// crosses the end of an epoch continues into the next.
    /// </summary>
    public static ITrainingBatches<T> Shuffled<T>(FashionMnist.Split split, int batch) where T : unmanaged, IFloatingPointIeee754<T> =>
        new ShuffledImages<T>(split, batch);

    /// <summary>The first <paramref name="count"/> images of <paramref name="split"/>.</summary>
    public static FashionMnist.Split First(FashionMnist.Split split, int count)
    {
        if (count < 1 || count > split.Count)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"count must be in 1..{split.Count} (the split's images) but was {count}.");
        return split with { Count = count, Pixels = split.Pixels[..(count * split.Features)], Labels = split.Labels[..count], Source = $"{split.Source} (first {count} images)" };
    }

    /// <summary>
    /// The first <paramref name="images"/> images (at most the split's) in order, in batches of
    /// <paramref name="batch"/>; a last partial batch is left out, so every batch has the same size.
    /// </summary>
    public static IEvaluationBatches<T> InOrder<T>(FashionMnist.Split split, int images, int batch) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int available = Math.Min(images, split.Count);
        batch = Math.Min(batch, available);
        return new OrderedImages<T>(split, batch, available / batch);
    }

    private static void Copy<T>(FashionMnist.Split split, int image, Span<T> x) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var pixels = split.Pixels.AsSpan(image * split.Features, split.Features);
        if (typeof(T) == typeof(float)) pixels.CopyTo(System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(x));
        else for (int i = 0; i < pixels.Length; i++) x[i] = T.CreateTruncating(pixels[i]);
    }

    // Batches of images chosen one by one: the two training orders differ only in which image comes next.
    private abstract class DrawnImages<T>(FashionMnist.Split split, int batch) : ITrainingBatches<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Rows => batch;
        public int Examples => batch;
        public int Inputs => batch * split.Features;

        protected int Count => split.Count;

        protected abstract int NextImage(Rng rng);

        public void Next(Rng rng, Span<T> x, Span<byte> y)
        {
            int d = split.Features;
            for (int b = 0; b < batch; b++)
            {
                int k = NextImage(rng);
                Copy(split, k, x.Slice(b * d, d));
                y[b] = split.Labels[k];
            }
        }
    }

    private sealed class RandomImages<T>(FashionMnist.Split split, int batch) : DrawnImages<T>(split, batch) where T : unmanaged, IFloatingPointIeee754<T>
    {
        protected override int NextImage(Rng rng) => rng.Next(Count);
    }

    private sealed class ShuffledImages<T>(FashionMnist.Split split, int batch) : DrawnImages<T>(split, batch) where T : unmanaged, IFloatingPointIeee754<T>
    {
        private readonly int[] _order = Enumerable.Range(0, split.Count).ToArray();
        private int _next = split.Count;   // the first draw shuffles

        protected override int NextImage(Rng rng)
        {
            if (_next == _order.Length)
            {
                for (int i = _order.Length - 1; i > 0; i--) { int j = rng.Next(i + 1); (_order[i], _order[j]) = (_order[j], _order[i]); }
                _next = 0;
            }
            return _order[_next++];
        }
    }

    private sealed class OrderedImages<T>(FashionMnist.Split split, int batch, int count) : IEvaluationBatches<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Rows => batch;
        public int Examples => batch;
        public int Inputs => batch * split.Features;
        public int Count => count;

        public void Get(int index, Span<T> x, Span<byte> y)
        {
            int d = split.Features;
            for (int b = 0; b < batch; b++)
            {
                Copy(split, index * batch + b, x.Slice(b * d, d));
                y[b] = split.Labels[index * batch + b];
            }
        }
    }
}

/// <summary>
/// Windows of a character corpus: the inputs are the ids at start..start+length-1 (as numbers),
/// the labels the characters that follow each. The first 90% of the text trains, the rest validates.
/// </summary>
public static class TextWindows
{
    /// <summary>The end of the training part of <paramref name="corpus"/>.</summary>
    public static int TrainingEnd(TextCorpus corpus) => corpus.Ids.Length * 9 / 10;

    /// <summary>Batches of <paramref name="sequences"/> windows starting at random in the training part.</summary>
    public static ITrainingBatches<T> Random<T>(TextCorpus corpus, int sequences, int length) where T : unmanaged, IFloatingPointIeee754<T> =>
        new RandomWindows<T>(corpus, sequences, length);

    /// <summary><paramref name="windows"/> consecutive windows of the held-out part, in batches of <paramref name="sequences"/>.</summary>
    public static IEvaluationBatches<T> Validation<T>(TextCorpus corpus, int sequences, int length, int windows) where T : unmanaged, IFloatingPointIeee754<T> =>
        new ValidationWindows<T>(corpus, sequences, length, (windows + sequences - 1) / sequences);

    private static void Window<T>(byte[] ids, int start, int length, Span<T> x, Span<byte> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int t = 0; t < length; t++) { x[t] = T.CreateTruncating(ids[start + t]); y[t] = ids[start + t + 1]; }
    }

    private sealed class RandomWindows<T>(TextCorpus corpus, int sequences, int length) : ITrainingBatches<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Rows => sequences * length;
        public int Inputs => sequences * length;
        public int Examples => sequences;

        public void Next(Rng rng, Span<T> x, Span<byte> y)
        {
            int end = TrainingEnd(corpus);
            for (int s = 0; s < sequences; s++)
                Window(corpus.Ids, rng.Next(end - length - 1), length, x.Slice(s * length, length), y.Slice(s * length, length));
        }
    }

    private sealed class ValidationWindows<T>(TextCorpus corpus, int sequences, int length, int count) : IEvaluationBatches<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Rows => sequences * length;
        public int Inputs => sequences * length;
        public int Examples => sequences;
        public int Count => count;

        public void Get(int index, Span<T> x, Span<byte> y)
        {
            int split = TrainingEnd(corpus), span = corpus.Ids.Length - split - length - 1;
            for (int s = 0; s < sequences; s++)
                Window(corpus.Ids, split + ((index * sequences + s) * length) % span, length, x.Slice(s * length, length), y.Slice(s * length, length));
        }
    }
}
