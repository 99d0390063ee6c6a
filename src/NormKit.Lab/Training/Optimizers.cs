using System.Numerics;

namespace NormKit.Lab.Training;

/// <summary>
/// An optimizer step over parameters; clears the gradients it used. The trainer sets
/// <see cref="LearningRate"/> before every step (its schedule).
/// </summary>
public interface IOptimizer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    double LearningRate { get; set; }
    void Step(IReadOnlyList<Param<T>> parameters);
}

/// <summary>
/// SGD with momentum and L2 weight decay in PyTorch's form: g += wd p; v = mu v + g; p -= lr v.
/// </summary>
public sealed class Sgd<T>(double lr, double momentum = 0, double weightDecay = 0) : IOptimizer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Dictionary<Param<T>, T[]> _velocity = new();

    public double LearningRate { get; set; } = lr;

    public void Step(IReadOnlyList<Param<T>> parameters)
    {
        T mu = T.CreateTruncating(momentum), rate = T.CreateTruncating(LearningRate), decay = T.CreateTruncating(weightDecay);
        for (int k = 0; k < parameters.Count; k++)
        {
            var p = parameters[k];
            Span<T> v = _velocity.TryGetValue(p, out var a) ? a : _velocity[p] = new T[p.Value.Length];
            Span<T> value = p.Value, grad = p.Grad;
            for (int i = 0; i < value.Length; i++)
            {
                T g = weightDecay == 0 ? grad[i] : grad[i] + decay * value[i];
                v[i] = mu * v[i] + g;
                value[i] -= rate * v[i];
            }
            grad.Clear();
        }
    }
}

/// <summary>AdamW (decoupled weight decay), PyTorch's defaults betas (0.9, 0.999), eps 1e-8.</summary>
public sealed class AdamW<T>(double lr, double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    : IOptimizer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Dictionary<Param<T>, (T[] M, T[] V)> _moments = new();
    private int _t;

    public double LearningRate { get; set; } = lr;

    public void Step(IReadOnlyList<Param<T>> parameters)
    {
        _t++;
        double lr = LearningRate, c1 = 1 - Math.Pow(beta1, _t), c2 = 1 - Math.Pow(beta2, _t);
        for (int k = 0; k < parameters.Count; k++)
        {
            var p = parameters[k];
            if (!_moments.TryGetValue(p, out var mv)) _moments[p] = mv = (new T[p.Value.Length], new T[p.Value.Length]);
            Span<T> value = p.Value, grad = p.Grad;
            for (int i = 0; i < value.Length; i++)
            {
                double g = double.CreateTruncating(grad[i]);
                double m = beta1 * double.CreateTruncating(mv.M[i]) + (1 - beta1) * g;
                double v = beta2 * double.CreateTruncating(mv.V[i]) + (1 - beta2) * g * g;
                mv.M[i] = T.CreateTruncating(m); mv.V[i] = T.CreateTruncating(v);
                double w = double.CreateTruncating(value[i]) * (1 - lr * weightDecay);
                value[i] = T.CreateTruncating(w - lr * (m / c1) / (Math.Sqrt(v / c2) + eps));
            }
            grad.Clear();
        }
    }
}

/// <summary>Which optimizer a run uses, with its settings; <see cref="Create{T}"/> builds it.</summary>
public sealed record OptimizerSettings(OptimizerKind Kind, double LearningRate, double Momentum = 0, double WeightDecay = 0)
{
    public static OptimizerSettings Sgd(double lr, double momentum = 0, double weightDecay = 0) => new(OptimizerKind.Sgd, lr, momentum, weightDecay);
    public static OptimizerSettings AdamW(double lr, double weightDecay = 0) => new(OptimizerKind.AdamW, lr, WeightDecay: weightDecay);

    public IOptimizer<T> Create<T>() where T : unmanaged, IFloatingPointIeee754<T> => Kind switch
    {
        OptimizerKind.Sgd => new Sgd<T>(LearningRate, Momentum, WeightDecay),
        _ => new AdamW<T>(LearningRate, WeightDecay),
    };

    public override string ToString() => Kind == OptimizerKind.Sgd
        ? $"SGD lr {LearningRate} momentum {Momentum}" + (WeightDecay != 0 ? $" weight decay {WeightDecay}" : "")
        : $"AdamW lr {LearningRate}" + (WeightDecay != 0 ? $" weight decay {WeightDecay}" : "");
}

public enum OptimizerKind { Sgd, AdamW }

/// <summary>The learning rate at each step, as a multiple of the base rate.</summary>
public abstract record Schedule
{
    /// <summary>The factor at <paramref name="step"/> (1-based) of <paramref name="steps"/>.</summary>
    public abstract double Factor(int step, int steps);

    /// <summary>The base rate throughout.</summary>
    public static Schedule Constant { get; } = new ConstantSchedule();

    /// <summary>Multiplied by <paramref name="gamma"/> at each of the given fractions of the run (PyTorch's MultiStepLR).</summary>
    public static Schedule Steps(double gamma, params double[] atFractions) => new StepSchedule(gamma, atFractions);

    /// <summary>Half a cosine from 1 to <paramref name="floor"/> over the run (PyTorch's CosineAnnealingLR, stepped per step).</summary>
    public static Schedule Cosine(double floor = 0) => new CosineSchedule(floor);

    private sealed record ConstantSchedule : Schedule
    {
        public override double Factor(int step, int steps) => 1;
        public override string ToString() => "constant";
    }

    private sealed record StepSchedule(double Gamma, double[] AtFractions) : Schedule
    {
        public override double Factor(int step, int steps)
        {
            double factor = 1;
            foreach (double f in AtFractions) if (step > f * steps) factor *= Gamma;
            return factor;
        }
        public override string ToString() => $"x{Gamma} at {string.Join(", ", AtFractions.Select(f => $"{f:P0}"))} of the steps";
    }

    private sealed record CosineSchedule(double Floor) : Schedule
    {
        public override double Factor(int step, int steps) =>
            Floor + (1 - Floor) * 0.5 * (1 + Math.Cos(Math.PI * (step - 1) / Math.Max(1, steps)));
        public override string ToString() => "cosine";
    }
}
