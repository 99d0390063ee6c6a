using System.Diagnostics;
using System.Numerics;

namespace NormKit.Lab.Training;

/// <summary>What one run trains for: steps, optimizer, schedule, the classes of its softmax.</summary>
public sealed record TrainSettings(int Steps, OptimizerSettings Optimizer, Schedule? LearningRates = null, int Classes = 10)
{
    public Schedule Schedule => LearningRates ?? Schedule.Constant;
}

/// <summary>The state after a step's backward, before the optimizer's update: the gradients are in the parameters.</summary>
public readonly record struct StepState(int Step, int Steps, double Loss, double LearningRate);

/// <summary>
/// The lab's one training loop: draw a batch, forward in training mode, softmax cross-entropy,
/// backward, (data-parallel: sum the gradients over the ranks), callbacks, optimizer step at the
/// scheduled rate. Buffers are kept across steps, so a step allocates nothing beyond what the
/// layers do. Every random draw comes from the one <see cref="Rng"/> the model was built with.
/// </summary>
public sealed class Trainer<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly Sequential<T> _model;
    private readonly ITrainingBatches<T> _data;
    private readonly TrainSettings _settings;
    private readonly Rng _rng;
    private readonly DataParallel<T>? _parallel;
    private readonly IOptimizer<T> _optimizer;
    private readonly T[] _x, _shardX;
    private readonly byte[] _y;
    private T[] _lossGradient = [];

    /// <summary>Called after every backward, before the optimizer step (the gradients are still there).</summary>
    public event Action<StepState>? AfterBackward;

    /// <summary>Every step's training loss (the whole batch's mean), filled as the run goes.</summary>
    public double[] Losses { get; }

    public IReadOnlyList<Param<T>> Parameters { get; }

    public Trainer(Sequential<T> model, ITrainingBatches<T> data, TrainSettings settings, Rng rng, DataParallel<T>? parallel = null)
    {
        if (settings.Steps < 0) throw new ArgumentOutOfRangeException(nameof(settings), settings.Steps, $"Steps must be >= 0 but was {settings.Steps}.");
        if (parallel is { WorldSize: > 1 } && data.Rows != data.Examples)
            throw new ArgumentException($"Data-parallel training shards images (one label per example); this data has {data.Rows} labels for {data.Examples} examples.", nameof(parallel));
        _model = model; _data = data; _settings = settings; _rng = rng; _parallel = parallel;
        _optimizer = settings.Optimizer.Create<T>();
        Parameters = model.Parameters.ToList();
        Losses = new double[settings.Steps];
        _x = new T[data.Inputs];
        _y = new byte[data.Rows];
        var (_, count) = parallel?.Shard(data.Rows) ?? (0, data.Rows);
        _shardX = parallel is { WorldSize: > 1 } ? new T[count * (data.Inputs / data.Rows)] : _x;
    }

    /// <summary>
    /// Runs every step; reports each to <paramref name="progress"/>. Returns the mean loss over the
    /// last tenth of the steps. A run whose loss becomes NaN or infinite has diverged: it stops there
    /// (every later step would compute NaN), the remaining <see cref="Losses"/> are NaN and so is the
    /// value returned; <see cref="Diverged"/> says so.
    /// </summary>
    public double Run(ProgressMeter? progress = null)
    {
        int steps = _settings.Steps;
        double recent = 0; int recentCount = 0;
        for (int step = 1; step <= steps; step++)
        {
            double loss = Step(step);
            if (step > steps * 9 / 10) { recent += loss; recentCount++; }
            progress?.Advance(loss, _data.Examples);
            if (!double.IsFinite(loss))
            {
                Diverged = true;
                Losses.AsSpan(step).Fill(double.NaN);
                progress?.Skip(steps - step);
                return double.NaN;
            }
        }
        return recent / Math.Max(1, recentCount);
    }

    /// <summary>Whether <see cref="Run"/> stopped at a NaN or infinite loss.</summary>
    public bool Diverged { get; private set; }

    /// <summary>One step (1-based, for the schedule); returns the batch's mean loss.</summary>
    public double Step(int step)
    {
        _data.Next(_rng, _x, _y);
        double rate = _settings.Optimizer.LearningRate * _settings.Schedule.Factor(step, _settings.Steps);
        double loss = ForwardBackward();
        _parallel?.SumGradients(Parameters);
        Losses[step - 1] = loss;
        AfterBackward?.Invoke(new StepState(step, _settings.Steps, loss, rate));
        _optimizer.LearningRate = rate;
        _optimizer.Step(Parameters);
        return loss;
    }

    // Forward on this rank's shard (the whole batch without a group), loss, backward. The shard's
    // loss gradient is scaled by shard / batch, so the gradients summed over the ranks are those of
    // the whole batch's mean loss; the loss returned is the whole batch's.
    private double ForwardBackward()
    {
        int batch = _y.Length;
        var (start, rows) = _parallel is { WorldSize: > 1 } p ? p.Shard(batch) : (0, batch);
        if (!ReferenceEquals(_shardX, _x)) _x.AsSpan(start * (_x.Length / batch), _shardX.Length).CopyTo(_shardX);
        var logits = _model.Forward(_shardX, rows, training: true);
        if (_lossGradient.Length != logits.Length) _lossGradient = new T[logits.Length];
        double loss = CrossEntropy.LossAndGradient<T>(logits, _y.AsSpan(start, rows), rows, _settings.Classes, _lossGradient);
        if (rows != batch)
        {
            T scale = T.CreateTruncating((double)rows / batch);
            for (int i = 0; i < _lossGradient.Length; i++) _lossGradient[i] *= scale;
            loss = loss * rows / batch;
        }
        _model.Backward(_lossGradient);
        return _parallel?.Sum(loss) ?? loss;
    }
}

/// <summary>A model's loss and accuracy over an evaluation set.</summary>
public static class Evaluation
{
    /// <param name="Accuracy">The fraction of rows whose largest logit is the label.</param>
    /// <param name="Loss">The mean cross-entropy per row, in nats.</param>
    public readonly record struct Result(double Accuracy, double Loss, int Rows);

    /// <summary>
    /// Runs every batch of <paramref name="data"/> through <paramref name="model"/> (eval mode unless
    /// <paramref name="training"/>: then each batch normalizes with its own statistics; the running
    /// statistics move as in training). <paramref name="afterBatch"/> sees each batch's row count
    /// right after its forward, while the layers still hold what they saw.
    /// </summary>
    public static Result Run<T>(Sequential<T> model, IEvaluationBatches<T> data, int classes, bool training = false, Action<int>? afterBatch = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var x = new T[data.Inputs];
        var y = new byte[data.Rows];
        T[] scratch = [];
        long right = 0, rows = 0;
        double nats = 0;
        for (int b = 0; b < data.Count; b++)
        {
            data.Get(b, x, y);
            var logits = model.Forward(x, data.Rows, training);
            if (scratch.Length != logits.Length) scratch = new T[logits.Length];
            nats += CrossEntropy.LossAndGradient<T>(logits, y, data.Rows, classes, scratch) * data.Rows;
            right += CrossEntropy.Correct<T>(logits, y, data.Rows, classes);
            rows += data.Rows;
            afterBatch?.Invoke(data.Rows);
        }
        return new Result(rows == 0 ? double.NaN : (double)right / rows, rows == 0 ? double.NaN : nats / rows, (int)rows);
    }
}

/// <summary>
/// Progress of a long job made of training steps: steps done of all, the recent loss,
/// examples per second and the time left, written at most once per <see cref="Interval"/>.
/// </summary>
public sealed class ProgressMeter(long totalSteps, Action<string> write)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _steps, _examples;
    private double _lastWrite = double.NegativeInfinity, _loss = double.NaN;

    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(2);
    public long TotalSteps => totalSteps;
    public long Steps => _steps;

    public void Advance(double loss, int examples)
    {
        _steps++; _examples += examples;
        _loss = double.IsNaN(_loss) || !double.IsFinite(loss) ? loss : 0.95 * _loss + 0.05 * loss;
        double now = _clock.Elapsed.TotalSeconds;
        if (now - _lastWrite < Interval.TotalSeconds && _steps != totalSteps) return;
        _lastWrite = now;
        write(Line(now));
    }

    /// <summary>Counts <paramref name="steps"/> as done without running them (a run that stopped early).</summary>
    public void Skip(long steps) => _steps += Math.Max(0, steps);

    /// <summary>The progress line at <paramref name="seconds"/> after the start.</summary>
    public string Line(double seconds)
    {
        double left = _steps == 0 ? double.NaN : seconds / _steps * (totalSteps - _steps);
        return FormattableString.Invariant(
            $"step {_steps}/{totalSteps} ({100.0 * _steps / Math.Max(1, totalSteps):F0}%), loss {_loss:F3}, {_examples / Math.Max(1e-9, seconds):F0} examples/s, {Duration(left)} left");
    }

    /// <summary>A duration as "1 h 02 min", "3 min 05 s" or "12 s".</summary>
    public static string Duration(double seconds)
    {
        if (!double.IsFinite(seconds)) return "?";
        var t = TimeSpan.FromSeconds(Math.Round(seconds));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours} h {t.Minutes:D2} min" : t.TotalMinutes >= 1 ? $"{t.Minutes} min {t.Seconds:D2} s" : $"{t.Seconds} s";
    }
}
