using System.Globalization;
using NormKit.Lab.Training;

namespace NormKit.Lab.Experiments;

/// <summary>
/// Each experiment's setup in words (model, data and its size, steps, seeds, optimizer), read from
/// its configuration and from the model it builds, so the report's setup paragraphs cannot drift
/// from what ran.
/// </summary>
public static class Setup
{
    /// <summary>The saturation experiment; <paramref name="trainData"/> says what it trained on, <paramref name="testImages"/> how many test images it evaluated.</summary>
    public static string Saturation(Saturation.Config c, string trainData, int testImages) =>
        $"{Experiments.Saturation.Network(c)} MLP ({Layers(Experiments.Saturation.Model("BatchNorm", "Glorot", c, new Rng(1)))}) with no normalization, BatchNorm or " +
        $"LayerNorm as the norm, each under {string.Join(" and ", Experiments.Saturation.Inits)} initialization. {Experiments.Saturation.Training(c).Optimizer} at batch {c.Batch}, " +
        $"{N(c.Steps)} steps, evaluated every {N(c.EvalEvery)} steps on {N(testImages)} test images; trained on {trainData}; {Seeds(c.Seeds)} per arm.";

    /// <summary>The batch-size experiment.</summary>
    public static string BatchSize(BatchSize.Config c, string trainData, int testImages) =>
        $"ReLU MLP ({Layers(Experiments.BatchSize.Model("BatchNorm", c, new Rng(1)))}) with {Arms(c.ArmList)} as the norm" +
        (c.ArmList.Contains("BatchRenorm") ? $" (Batch Renormalization with the paper's clip schedule and averaging rate scaled to the run: {nameof(RenormSchedule)} in the lab's code)" : "") +
        (c.ArmList.Contains("GhostBatchNorm") ? $" (ghost batches of {Experiments.BatchSize.GhostSize}, run only at larger batches)" : "") +
        (c.ArmList.Contains("FRN") ? " (FRN with a learned eps and its TLU in place of the ReLU)" : "") + ". " +
        $"{Experiments.BatchSize.Training(c, 1).Optimizer}; {N(c.Examples)} training examples at every batch size ({string.Join(", ", c.BatchSizes)}), so batch b takes " +
        $"{N(c.Examples)}/b steps; trained on {trainData}; test error on {N(testImages)} test images in eval mode (running statistics), for BatchNorm also with " +
        $"each test batch's own statistics (test batches of the training batch size); {Seeds(c.Seeds)} per arm and batch size.";

    /// <summary>The vision experiment (the small CNN).</summary>
    public static string Vision(Vision.Config c, string trainData, int testImages) =>
        $"CNN ({Layers(Experiments.Vision.Model<float>("BatchNorm", new Rng(1)))}) with no normalization, BatchNorm, LayerNorm, GroupNorm or InstanceNorm as the norm. " +
        $"{Experiments.Vision.Training(c).Optimizer} at batch {c.Batch}, {N(c.Steps)} steps; trained on {trainData}; test accuracy on {N(testImages)} test images; " +
        $"{Seeds(c.Seeds)} per arm.";

    /// <summary>The language experiment; <paramref name="text"/> says what it trained on.</summary>
    public static string Language(Language.Config c, string text) =>
        $"Pre-norm Transformer ({c.Blocks} blocks of width {c.Dim}, {c.Heads} attention heads, context {c.Length} characters) with " +
        $"{Arms(c.ArmList)} (BatchNorm{(c.ArmList.Contains("PowerNorm") ? " and PowerNorm" : "")} with statistics over batch x time" +
        $"{(c.ArmList.Contains("PowerNorm") ? $"; PowerNorm's warm-up {N(c.PowerNormWarmup)} steps" : "")}). AdamW lr {c.LearningRate.ToString(CultureInfo.InvariantCulture)}, {c.Sequences} sequences per step, " +
        $"{N(c.Steps)} steps; text: {text}; validation bits per character on {N(c.ValidationSequences)} windows of held-out text; {Seeds(c.Seeds)} per arm.";

    /// <summary>The distribution-shift experiment.</summary>
    public static string Shift(Shift.Config c, string trainData) =>
        $"The vision CNN ({Experiments.Vision.Training(c.Training).Optimizer} at batch {c.Batch}, {N(c.Steps)} steps; trained on {trainData}), tested on {N(c.TestImages)} test images " +
        $"changed: {string.Join(", ", Experiments.Shift.Changes.Skip(1).Select(ch => ch.Name))}. \"BatchNorm + AdaBN\" re-estimates BatchNorm's running statistics on the changed images. " +
        $"{Seeds(c.Seeds)} per arm.";

    /// <summary>The residual CNN; <paramref name="steps"/> the steps per run when known (from the results).</summary>
    public static string ResNet(ResNetVision.Config c, string trainData, int? steps = null) =>
        $"{c}, arms {string.Join(", ", c.Arms)}{(steps is int s ? $", {N(s)} steps per run" : "")}; trained on {trainData}; test error on {N(c.TestImages)} test images.";

    /// <summary>
    /// A model's layers in words, e.g. "conv 3x3 1->8, norm, relu, 2x2 max-pool, ..., linear 784->10";
    /// a block repeated back to back is written once with its count ("2 x (linear 100->100, norm, sigmoid)").
    /// </summary>
    public static string Layers<T>(Sequential<T> model) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(model);
        return string.Join(", ", Compress(model.Layers.Select(Name).ToList()));
    }

    private static string Name<T>(ILayer<T> layer) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T> => layer switch
    {
        Linear<T> l => $"linear {l.In}->{l.Out}",
        Conv2d<T> c => $"conv {c.Kernel}x{c.Kernel} {c.InChannels}->{c.OutChannels}",
        Activation<T> a => a.Function.ToString().ToLowerInvariant(),
        MaxPool2<T> => "2x2 max-pool",
        Norm<T> => "norm",
        _ => layer.GetType().Name.Split('`')[0].ToLowerInvariant(),
    };

    // Run-length coding of repeated blocks, the longest repeat first; a block starts at a weight
    // layer, so "2 x (linear, norm, sigmoid)" rather than "2 x (norm, sigmoid, linear)".
    private static List<string> Compress(List<string> names)
    {
        var result = new List<string>();
        int i = 0;
        while (i < names.Count)
        {
            if (!names[i].StartsWith("linear", StringComparison.Ordinal) && !names[i].StartsWith("conv", StringComparison.Ordinal)) { result.Add(names[i]); i++; continue; }
            (int Length, int Times) best = (1, 1);
            for (int length = 1; i + 2 * length <= names.Count; length++)
            {
                int times = 1;
                while (i + (times + 1) * length <= names.Count && names.Skip(i).Take(length).SequenceEqual(names.Skip(i + times * length).Take(length))) times++;
                if (times > 1 && times * length > best.Length * best.Times) best = (length, times);
            }
            if (best.Times == 1) { result.Add(names[i]); i++; continue; }
            string block = string.Join(", ", names.Skip(i).Take(best.Length));
            result.Add(best.Length == 1 ? $"{best.Times} x {block}" : $"{best.Times} x ({block})");
            i += best.Length * best.Times;
        }
        return result;
    }

    // "no normalization, BatchNorm, LayerNorm or GroupNorm".
    private static string Arms(IReadOnlyList<string> arms)
    {
        var names = arms.Select(a => a switch
        {
            "none" => "no normalization",
            Experiments.Language.ScaledDynamicTanh => "DynamicTanh with the embedding output multiplied by a learnable scalar (initialised to sqrt(d_model), the paper's LLaMA recipe)",
            _ => a,
        }).ToList();
        return names.Count == 1 ? names[0] : string.Join(", ", names.Take(names.Count - 1)) + " or " + names[^1];
    }

    private static string Seeds(int seeds) => seeds == 1 ? "1 seed" : $"{seeds} seeds";

    private static string N(int value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
