using System.Numerics;
using System.Numerics.Tensors;
using NormKit.Layers;

namespace NormKit.Lab.Training;

/// <summary>The normalization arms the lab compares, by name.</summary>
public static class NormArms
{
    /// <summary>The arms the residual CNN's comparison trains: no normalization and the four norms of Wu &amp; He's Table 1.</summary>
    public static readonly string[] Compared = ["none", "BatchNorm", "GroupNorm", "LayerNorm", "InstanceNorm"];

    /// <summary>Every arm: <see cref="Compared"/>, then two of BatchNorm's fixes for small batches.</summary>
    public static readonly string[] Names = [.. Compared, "BatchRenorm", "FRN"];

    /// <summary>
    /// The arm's norm over (N, channels, h, w) activations; null for "none". FRN keeps the ReLU that
    /// follows every norm here, so its TLU acts as max(y, max(tau, 0)).
    /// </summary>
    /// <param name="renormMomentum">Batch Renormalization's averaging rate (<see cref="RenormSchedule.Momentum"/>).</param>
    public static ILayer<T>? Create<T>(string arm, int channels, int h, int w, double renormMomentum = 0.01) where T : unmanaged, IFloatingPointIeee754<T> => arm switch
    {
        "none" => null,
        "BatchNorm" => new Norm<T>(new BatchNorm2d<T>(channels), channels, h, w),
        "GroupNorm" => new Norm<T>(new GroupNorm<T>(Groups(channels), channels), channels, h, w),
        "LayerNorm" => new Norm<T>(new LayerNorm<T>([channels, h, w]), channels, h, w),
        "InstanceNorm" => new Norm<T>(new InstanceNorm2d<T>(channels, affine: true), channels, h, w),
        "BatchRenorm" => new Norm<T>(new BatchRenorm<T>(channels, momentum: renormMomentum), channels, h, w),
        "FRN" => new Norm<T>(new FilterResponseNorm<T>(channels), channels, h, w),
        _ => throw new ArgumentException($"arm must be one of {string.Join(", ", Names)} but was '{arm}'.", nameof(arm)),
    };

    /// <summary>
    /// GroupNorm's group count: Wu &amp; He's default of 32, capped at channels / 2 so that every
    /// group has at least two channels, then lowered to the nearest divisor of channels.
    /// </summary>
    public static int Groups(int channels)
    {
        int g = Math.Clamp(channels / 2, 1, 32);
        while (channels % g != 0) g--;
        return g;
    }
}

/// <summary>
/// A basic residual block (He et al. 2016): relu(norm(conv3x3(relu(norm(conv3x3(x))))) + shortcut(x)),
/// the shortcut the identity, or conv1x1 + norm where the stride or the width changes. A conv has
/// a bias exactly when no norm follows it. Without a shortcut (a plain block, for the depth
/// comparisons of the learning-rate sweep) it is relu(norm(conv3x3(relu(norm(conv3x3(x)))))).
/// </summary>
public sealed class ResidualBlock<T> : ILayer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public string Name { get; }
    public Conv2d<T> Conv1 { get; }
    public ILayer<T>? Norm1 { get; }
    public Conv2d<T> Conv2 { get; }
    public ILayer<T>? Norm2 { get; }
    public Conv2d<T>? ShortcutConv { get; }
    public ILayer<T>? ShortcutNorm { get; }
    /// <summary>Whether the block adds its input (or its projection) to the branch.</summary>
    public bool HasShortcut { get; }

    private T[] _mid = [], _out = [], _dSum = [], _dMid = [], _dx = [];
    private int _batch;

    public ResidualBlock(string name, int inChannels, int outChannels, int stride, int height, int width, string arm, Rng rng, bool shortcut = true,
        double renormMomentum = 0.01)
    {
        Name = name;
        HasShortcut = shortcut;
        var convolved = new ConvGeometry(inChannels, height, width, 3, stride, 1);
        int oh = convolved.OutHeight, ow = convolved.OutWidth;
        Norm1 = NormArms.Create<T>(arm, outChannels, oh, ow, renormMomentum);
        Norm2 = NormArms.Create<T>(arm, outChannels, oh, ow, renormMomentum);
        Conv1 = new Conv2d<T>(inChannels, outChannels, 3, stride, 1, height, width, bias: Norm1 is null, rng);
        Conv2 = new Conv2d<T>(outChannels, outChannels, 3, 1, 1, oh, ow, bias: Norm2 is null, rng);
        if (shortcut && (stride != 1 || inChannels != outChannels))
        {
            ShortcutNorm = NormArms.Create<T>(arm, outChannels, oh, ow, renormMomentum);
            ShortcutConv = new Conv2d<T>(inChannels, outChannels, 1, stride, 0, height, width, bias: ShortcutNorm is null, rng);
        }
    }

    public int OutChannels => Conv2.OutChannels;
    public int OutHeight => Conv2.OutHeight;
    public int OutWidth => Conv2.OutWidth;

    /// <summary>The block's norms by name (none for the "none" arm), for per-layer statistics.</summary>
    public IEnumerable<(string Name, ILayer<T> Norm)> Norms
    {
        get
        {
            if (Norm1 is not null) yield return ($"{Name}.norm1", Norm1);
            if (Norm2 is not null) yield return ($"{Name}.norm2", Norm2);
            if (ShortcutNorm is not null) yield return ($"{Name}.shortcut.norm", ShortcutNorm);
        }
    }

    public IEnumerable<Param<T>> Parameters =>
        new ILayer<T>?[] { Conv1, Norm1, Conv2, Norm2, ShortcutConv, ShortcutNorm }.SelectMany(l => l?.Parameters ?? []);

    public T[] Forward(T[] x, int batch, bool training)
    {
        var a = Conv1.Forward(x, batch, training);
        a = Norm1?.Forward(a, batch, training) ?? a;
        if (batch != _batch)
        {
            _batch = batch;
            _mid = new T[a.Length]; _out = new T[a.Length]; _dSum = new T[a.Length]; _dMid = new T[a.Length];
            _dx = new T[x.Length];
        }
        TensorPrimitives.Max(a, T.Zero, _mid);
        var b = Conv2.Forward(_mid, batch, training);
        b = Norm2?.Forward(b, batch, training) ?? b;
        if (HasShortcut)
        {
            var shortcut = x;
            if (ShortcutConv is not null)
            {
                shortcut = ShortcutConv.Forward(x, batch, training);
                shortcut = ShortcutNorm?.Forward(shortcut, batch, training) ?? shortcut;
            }
            TensorPrimitives.Add(b, shortcut, _out);
            TensorPrimitives.Max(_out, T.Zero, _out);
        }
        else TensorPrimitives.Max(b, T.Zero, _out);
        return _out;
    }

    public T[] Backward(T[] dy)
    {
        if (_batch == 0) throw new InvalidOperationException($"{Name}: Backward needs a Forward first.");
        LayerArguments.Length(dy, _batch, [OutChannels, OutHeight, OutWidth], "ResidualBlock output gradient", nameof(dy));
        ReluBackward(_out, dy, _dSum);
        var d = Norm2?.Backward(_dSum) ?? _dSum;
        ReluBackward(_mid, Conv2.Backward(d), _dMid);
        d = Norm1?.Backward(_dMid) ?? _dMid;
        var dBranch = Conv1.Backward(d);
        if (!HasShortcut) return dBranch;
        var dShortcut = _dSum;
        if (ShortcutConv is not null) dShortcut = ShortcutConv.Backward(ShortcutNorm?.Backward(_dSum) ?? _dSum);
        TensorPrimitives.Add(dBranch, dShortcut, _dx);
        return _dx;
    }

    // dx = dy where the ReLU's output y is positive, else 0.
    private static void ReluBackward(ReadOnlySpan<T> y, ReadOnlySpan<T> dy, Span<T> dx)
    {
        for (int i = 0; i < y.Length; i++) dx[i] = y[i] > T.Zero ? dy[i] : T.Zero;
    }
}

/// <summary>
/// A CIFAR-style ResNet (He et al. 2016, section 4.2) for small single-channel images: a stem
/// conv3x3 1 -> w with norm and ReLU; three stages of <see cref="Config.Blocks"/> basic blocks of
/// widths w, 2w, 4w, the first block of stages 2 and 3 with stride 2 and a projection shortcut;
/// global average pooling; a linear classifier. 6 Blocks + 2 weight layers (projections not counted).
/// </summary>
public static class ResidualCnn
{
    /// <param name="Width">Channels of the first stage (w).</param>
    /// <param name="Blocks">Basic blocks per stage.</param>
    /// <param name="Shortcuts">False: the same network without shortcuts (a plain CNN of the same depth, He et al.'s "plain" baseline).</param>
    /// <param name="RenormMomentum">The BatchRenorm arm's averaging rate (<see cref="RenormSchedule.Momentum"/>).</param>
    public sealed record Config(int Width = 16, int Blocks = 2, int ImageHeight = 28, int ImageWidth = 28, int Classes = 10, bool Shortcuts = true,
        double RenormMomentum = 0.01)
    {
        /// <summary>He et al.'s count: the stem, two convs per block, the classifier.</summary>
        public int WeightLayers => 6 * Blocks + 2;

        /// <summary>"ResNet-14" or "plain CNN-14".</summary>
        public string Name => Shortcuts ? $"ResNet-{WeightLayers}" : $"plain CNN-{WeightLayers}";
    }

    // Fixup's m: weight layers in each residual branch.
    private const int BranchDepth = 2;

    /// <summary>
    /// The network with the given norm arm (see <see cref="NormArms"/>). The "none" arm gets
    /// Fixup's initialization (Zhang, Dauphin &amp; Ma 2019, rules 1 and 2): the classifier and the
    /// last conv of every residual branch start at zero, the branch's other conv is He-initialized
    /// and scaled by L^(-1/(2m - 2)) for L blocks of m = 2 layers. Norm arms, and every arm of the
    /// plain network (where a zero conv would cut the signal), keep the standard init.
    /// </summary>
    public static Sequential<T> Build<T>(Config c, string arm, Rng rng) where T : unmanaged, IFloatingPointIeee754<T>
    {
        LayerArguments.AtLeast(c.Width, 1, "Width");
        LayerArguments.AtLeast(c.Blocks, 1, "Blocks");
        LayerArguments.AtLeast(c.Classes, 1, "Classes");
        int h = c.ImageHeight, w = c.ImageWidth;
        var stemNorm = NormArms.Create<T>(arm, c.Width, h, w, c.RenormMomentum);
        var layers = new List<ILayer<T>> { new Conv2d<T>(1, c.Width, 3, 1, 1, h, w, bias: stemNorm is null, rng) };
        if (stemNorm is not null) layers.Add(stemNorm);
        layers.Add(new Activation<T>(Activation<T>.Kind.ReLU));
        var blocks = new List<ResidualBlock<T>>();
        int channels = c.Width;
        for (int stage = 1; stage <= 3; stage++)
        {
            int width = c.Width << (stage - 1);
            for (int b = 1; b <= c.Blocks; b++)
            {
                int stride = stage > 1 && b == 1 ? 2 : 1;
                var block = new ResidualBlock<T>($"stage{stage}.block{b}", channels, width, stride, h, w, arm, rng, c.Shortcuts, c.RenormMomentum);
                blocks.Add(block);
                (channels, h, w) = (width, block.OutHeight, block.OutWidth);
            }
        }
        layers.AddRange(blocks);
        var classifier = new Linear<T>(channels, c.Classes, Init.Glorot, rng);
        layers.AddRange([new GlobalAvgPool<T>(channels, h, w), classifier]);
        if (arm == "none" && c.Shortcuts)
        {
            T branchScale = T.CreateTruncating(Math.Pow(blocks.Count, -1.0 / (2 * BranchDepth - 2)));
            foreach (var block in blocks)
            {
                TensorPrimitives.Multiply(block.Conv1.Weight.Value, branchScale, block.Conv1.Weight.Value);
                block.Conv2.Weight.Value.Clear();
            }
            classifier.Weight.Value.Clear();
        }
        return new Sequential<T>(layers);
    }

    /// <summary>The residual blocks of a network from <see cref="Build"/>, in order.</summary>
    public static IEnumerable<ResidualBlock<T>> Blocks<T>(Sequential<T> model) where T : unmanaged, IFloatingPointIeee754<T> =>
        model.Layers.OfType<ResidualBlock<T>>();

    /// <summary>Every norm of a network from <see cref="Build"/> by name ("stem.norm", "stage2.block1.norm1", ...), in forward order.</summary>
    public static IEnumerable<(string Name, ILayer<T> Norm)> Norms<T>(Sequential<T> model) where T : unmanaged, IFloatingPointIeee754<T>
    {
        foreach (var layer in model.Layers)
        {
            if (layer is ResidualBlock<T> block)
                foreach (var n in block.Norms) yield return n;
            else if (layer is Norm<T> stem)
                yield return ("stem.norm", stem);
        }
    }
}
