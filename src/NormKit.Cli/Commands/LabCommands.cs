using System.CommandLine;
using System.Diagnostics;
using NormKit.Lab.Data;
using NormKit.Lab.Experiments;
using NormKit.Lab.Training;

namespace NormKit.Cli.Commands;

/// <summary>normkit lab: each experiment on its own, with its CSV file, its charts and a summary table.</summary>
internal static class LabCommands
{
    public static Command Create()
    {
        var lab = new Command("lab", Common.Prose("""
            Each lab experiment on its own: a summary table, every run as CSV and the charts (PNG and SVG).
            Without --quick an experiment runs its full mode (measured on 2 cores with the full
            Fashion-MNIST set: 3 to 12 minutes each, the residual CNN hours; docs/lab); with --quick about a minute.
            """))
        {
            Saturation(), Depth(), BatchSizeCommand(), Figure(), LanguageCommand(), VisionCommand(), ResNetCommand(), LearningRateSweepCommand(), ShiftCommand(), DataParallelCommand.Create(), ChartsCommand(), VerdictsCommand(),
        };
        Common.RequireSubcommand(lab);
        return lab;
    }

    private static Command Saturation()
    {
        var quick = Common.Flag("--quick", "one seed, 1000 steps (about 15 seconds)");
        var deep = Common.Flag("--deep", "ten hidden layers, 6000 steps, one seed");
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("saturation", Common.Prose("""
            The BatchNorm paper's Figure 1 on Fashion-MNIST: sigmoid MLPs without normalization, with
            BatchNorm and with LayerNorm, under N(0, 0.01^2) and Glorot initialization. Prints the final
            test accuracy, saturation and gradient norms per arm; writes every evaluation point to
            DIR/saturation.csv and charts of accuracy, last-layer input percentiles and saturation
            against steps. The default runs 8000 steps and three seeds (2 min 50 s measured on 2 cores);
            --quick takes about 15 seconds.
            """)) { quick, deep, data, outDir };
        command.Validators.Add(r =>
        {
            if (r.GetValue(quick) && r.GetValue(deep)) r.AddError("--quick and --deep cannot be combined.");
        });
        command.SetAction(r =>
        {
            var config = r.GetValue(deep) ? Lab.Experiments.Saturation.Config.Deep : r.GetValue(quick) ? Lab.Experiments.Saturation.Config.Quick : Lab.Experiments.Saturation.Config.Full;
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            Console.WriteLine($"Training on {train.Count} images ({train.Source}), testing on {Math.Min(test.Count, config.TestImages)} ({test.Source}).");
            Console.WriteLine($"{config.HiddenLayers} x {config.Hidden} sigmoid, batch {config.Batch}, SGD lr {config.LearningRate} momentum {config.Momentum}, {config.Steps} steps, {config.Seeds} seed(s).");
            var points = Lab.Experiments.Saturation.Run(config, train, test, Progress(), Meter(Lab.Experiments.Saturation.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, config.HiddenLayers == 3 ? "saturation.csv" : $"saturation-{config.HiddenLayers}layers.csv", Lab.Experiments.Saturation.Csv(points));
            var table = Common.Table("<init", "<arm", "test acc", "first acc", "saturated", "sigmoid'", "p15..p85 first", "p15..p85 last", "|dW| first layer");
            foreach (var s in SaturationSummary.Of(points))
                table.AddTextRow(s.Init, s.Arm, $"{s.TestAccuracy:F3}", $"{s.FirstTestAccuracy:F3}", $"{s.SaturatedFraction:F3}", $"{s.MeanSigmoidDerivative:F3}",
                    $"{s.FirstP15:F2}..{s.FirstP85:F2}", $"{s.P15:F2}..{s.P85:F2}", $"{s.FirstLayerGradNorm:E2}");
            Common.Write(table);
            Console.WriteLine($"Every evaluation point: {csv}");
            var charts = SaturationPlots.Write(points, dir, Path.GetFileNameWithoutExtension(csv), config);
            Console.WriteLine($"Charts (PNG and SVG): {string.Join(", ", charts.Select(Path.GetFileName))}");
        });
        return command;
    }

    private static Command Depth()
    {
        var quick = Common.Flag("--quick", "300 steps, one seed, 1000 test images (about 15 seconds)");
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("depth", Common.Prose("""
            Why LayerNorm does not train the 10-layer sigmoid MLP of 'lab saturation --deep' where BatchNorm
            does: the network with no normalization, BatchNorm, LayerNorm and LayerNorm with a centred
            sigmoid (SGD lr 0.1, momentum 0.9), and LayerNorm with SGD at lr 0.01 and 1 and Adam at 1e-4
            and 1e-3. At fixed steps a probe batch measures, per layer, the gradient norms before and
            after the norm and the sigmoid, and how different the samples' activations are. Prints the
            summary per setting and the verdicts; writes DIR/depth.csv, DIR/depth-layers.csv and charts.
            The full mode (2000 steps, three seeds, eight settings) took 5 min 20 s and 5 min 57 s in two
            runs on 2 cores that another training job was also using; --quick about 15 seconds.
            """)) { quick, data, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? DepthDiagnosis.Config.Quick : DepthDiagnosis.Config.Full;
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            Console.WriteLine($"Training on {train.Count} images ({train.Source}), testing on {Math.Min(test.Count, config.TestImages)}; probe: the first {Math.Min(train.Count, config.ProbeImages)} training images.");
            Console.WriteLine($"{config.HiddenLayers} x {config.Hidden} sigmoid, {config.Init} initialization, batch {config.Batch}, {config.Steps} steps, {config.Seeds} seed(s); SGD momentum 0.9.");
            var points = DepthDiagnosis.Run(config, train, test, Progress(), Meter(DepthDiagnosis.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, "depth.csv", DepthDiagnosis.Table(points).ToCsv());
            string layers = Common.WriteCsv(dir, "depth-layers.csv", DepthDiagnosis.LayerTable(points).ToCsv());
            var table = Common.Table("<setting", "test acc", "sd", "log10|dW1| start", "log10|dW1| end", "layer gain start", "layer gain end", "separation L start", "separation L end", "shared L start", "shared L end");
            foreach (var s in DepthSummary.Of(points))
                table.AddTextRow(s.Diverged > 0 ? $"{s.Setting} ({s.Diverged} diverged)" : s.Setting, $"{s.TestAccuracy.Mean:F3}", $"{s.TestAccuracy.Sd:F3}",
                    $"{s.Log10FirstGradStart.Mean:F2}", $"{s.Log10FirstGradEnd.Mean:F2}", $"{s.GainStart.Mean:F2}", $"{s.GainEnd.Mean:F2}",
                    $"{s.SeparationStart.Mean:G2}", $"{s.SeparationEnd.Mean:G2}", $"{s.SharedStart.Mean:F3}", $"{s.SharedEnd.Mean:F3}");
            Common.Write(table);
            Console.WriteLine("Means over seeds. |dW1|: the first layer's weight gradient; layer gain: the geometric mean of ||dL/dh(l-1)|| / ||dL/dh(l)||;");
            Console.WriteLine("separation L: between-sample over within-sample sd of the last layer's sigmoid input; shared L: the share of its Linear output's");
            Console.WriteLine("within-sample variance that is the same for every sample. By the verdict rule (2 standard errors):");
            foreach (var v in DepthDiagnosis.Verdicts(points))
                Console.WriteLine($"  {v.Claim}: {v.Verdict}; {v.Numbers("F3")}");
            Console.WriteLine($"Every probe: {csv}; every layer of every probe: {layers}");
            var charts = DepthDiagnosisPlots.Write(points, dir);
            Console.WriteLine($"Charts (PNG and SVG): {string.Join(", ", charts.Select(Path.GetFileName))}");
        });
        return command;
    }

    private static Command BatchSizeCommand()
    {
        var quick = Common.Flag("--quick", "batch sizes 2, 8, 32 and 128, one seed");
        var seeds = Common.AtLeast("--seeds", 1, 3, "seeds per arm and batch size (with --quick: 1 unless given)");
        var firstSeed = Common.AtLeast("--first-seed", 1, 1, "the first seed (e.g. --first-seed 3 --seeds 1 adds seed 3 to an earlier run's CSV)");
        var arms = Common.Arms(BatchSize.Arms);
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("batch-size", Common.Prose("""
            ReLU MLPs with no normalization, BatchNorm, LayerNorm and GroupNorm, and BatchNorm's fixes (Batch
            Renormalization, ghost batches, Filter Response Normalization) trained on the same number
            of examples at batch sizes 2..128: test error against batch size, and BatchNorm's error with
            batch statistics at test time. Writes DIR/batch-size.csv and a chart. The full mode (3 seeds,
            every arm) takes about half an hour on 2 cores (the small batches' many steps: about 1.5 minutes
            per arm and seed); --quick (the four classic arms): about a minute and a half.
            """)) { quick, seeds, firstSeed, arms, data, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? BatchSize.Config.Quick : BatchSize.Config.Full;
            if (r.GetResult(seeds) is { Implicit: false }) config = config with { Seeds = r.GetValue(seeds) };
            if (r.GetValue(arms) is { Length: > 0 } chosen) config = config with { Arms = chosen.Distinct().ToArray() };
            config = config with { FirstSeed = r.GetValue(firstSeed) };
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            Console.WriteLine($"Training on {train.Count} images, {config.Examples} examples per run, AdamW lr {config.LearningRate}; testing on {Math.Min(test.Count, config.TestImages)}.");
            var points = BatchSize.Run(config, train, test, Progress(), Meter(BatchSize.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, "batch-size.csv", BatchSize.Csv(points));
            var table = Common.Table(["batch", .. config.ArmList, "BN train-mode"]);
            foreach (var s in BatchSizeSummary.Of(points, config.ArmList))
                table.AddTextRow([$"{s.Batch}", .. s.TestError.Select(e => double.IsNaN(e) ? "—" : $"{e:F3}"), $"{s.BatchNormTrainModeError:F3}"]);
            Common.Write(table);
            Console.WriteLine($"Test error (eval mode) per arm, mean over seeds; every run: {csv}");
            WriteFindings("Verdicts on the eval-mode error", Claims.BatchSize(points));
            Console.WriteLine($"Chart (PNG and SVG): {Path.GetFileName(BatchSize.Plot(points, dir, "batch-size"))}");
        });
        return command;
    }

    private static Command Figure()
    {
        var data = Common.Data();
        var outDir = Common.Out("lab-results", "figures");
        var command = new Command("figure", Common.Prose("""
            The seed article's Figure 1 drawn from a real batch, and which cells share one statistic in
            BatchNorm, LayerNorm, InstanceNorm and GroupNorm (PNG and SVG; about a second).
            """)) { data, outDir };
        command.SetAction(r =>
        {
            var paths = Lab.Experiments.Figure.Write(FashionMnist.LoadTest(r.GetValue(data)), r.GetValue(outDir)!);
            Console.WriteLine($"Figures (PNG and SVG): {string.Join(", ", paths)}");
        });
        return command;
    }

    private static Command LanguageCommand()
    {
        var quick = Common.Flag("--quick", "300 steps, one seed");
        var arms = Common.Arms(Language.Arms);
        var text = Common.Text();
        var outDir = Common.Out("lab-results");
        var command = new Command("language", Common.Prose("""
            A tiny pre-norm Transformer on characters with no normalization, LayerNorm, RMSNorm,
            BatchNorm, PowerNorm and Dynamic Tanh: validation bits per character, and how far BatchNorm's
            batch means stray from its running mean (also scale-free). Writes DIR/language.csv and a chart.
            The full mode (3 seeds, 7 arms) takes about 21 minutes on 2 cores (the four classic arms took 11 min 24 s,
            PowerNorm and Dynamic Tanh 6 min 4 s, Dynamic Tanh with the scaled embedding 3 min 49 s);
            --quick (the four classic arms): about a minute.
            """)) { quick, arms, text, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? Language.Config.Quick : Language.Config.Full;
            if (r.GetValue(arms) is { Length: > 0 } chosen) config = config with { Arms = chosen.Distinct().ToArray() };
            string dir = r.GetValue(outDir)!;
            var corpus = TextData.Load(r.GetValue(text));
            Console.WriteLine($"Text: {corpus.Ids.Length} characters from {corpus.Source}; {config.Steps} AdamW steps of {config.Sequences} x {config.Length} characters, {config.Seeds} seed(s).");
            var results = Language.Run(config, corpus, Progress(), Meter(Language.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, "language.csv", Language.Csv(results));
            var table = Common.Table("<arm", "validation bits/char", "sd", "batch mean fluctuation", "scale-free: mean / sd", "<");
            foreach (var s in LanguageSummary.Of(results))
            {
                var finite = SeedStats.Of(results.Where(x => x.Arm == s.Arm && double.IsFinite(x.ValidationBitsPerChar)).Select(x => x.ValidationBitsPerChar));
                table.AddTextRow(s.Arm, $"{s.BitsPerChar:F3}", $"{finite.Sd:F3}", $"{s.BatchMeanFluctuation:E2}",
                    $"{results.Where(x => x.Arm == s.Arm).Average(x => x.BatchFluctuationScaleFree):F4} / {results.Where(x => x.Arm == s.Arm).Average(x => x.BatchVarianceFluctuationScaleFree):F4}",
                    s.Diverged > 0 ? $"{s.Diverged} of {s.Runs} runs diverged to NaN" : "");
            }
            Common.Write(table);
            WriteFindings("Verdicts", Claims.Language(results, null));
            Console.WriteLine($"Every run: {csv}; chart: {Language.Plot(results, dir)}");
        });
        return command;
    }

    private static Command VisionCommand()
    {
        var quick = Common.Flag("--quick", "250 steps, one seed");
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("vision", Common.Prose("""
            A small CNN with no normalization, BatchNorm, LayerNorm, GroupNorm and InstanceNorm: final
            test accuracy, mean and standard deviation over seeds. Writes DIR/vision.csv and a chart. The
            full mode took 3 min 21 s on 2 cores; --quick: about a minute.
            """)) { quick, data, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? Vision.Config.Quick : Vision.Config.Full;
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            Console.WriteLine($"Training on {train.Count} images, {config.Steps} AdamW steps (lr {config.LearningRate}) at batch {config.Batch}, {config.Seeds} seed(s); testing on {Math.Min(test.Count, config.TestImages)}.");
            var results = Vision.Run(config, train, test, Progress(), Meter(Vision.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, "vision.csv", Vision.Csv(results));
            var table = Common.Table("<arm", "test accuracy", "sd", "test error %", "batch mean fluctuation", "scale-free: mean / sd");
            foreach (var s in VisionSummary.Of(results))
                table.AddTextRow(s.Arm, $"{s.TestAccuracy.Mean:F4}", $"{s.TestAccuracy.Sd:F4}", $"{s.TestErrorPercent:F2}", $"{s.BatchMeanFluctuation:E2}",
                    $"{results.Where(x => x.Arm == s.Arm).Average(x => x.BatchFluctuationScaleFree):F4} / {results.Where(x => x.Arm == s.Arm).Average(x => x.BatchVarianceFluctuationScaleFree):F4}");
            Common.Write(table);
            Console.WriteLine($"Every run: {csv}; chart: {Vision.Plot(results, dir)}");
        });
        return command;
    }

    private static Command ResNetCommand()
    {
        var quick = Common.Flag("--quick", "one epoch of the first 4000 training images, one seed, 2000 test images");
        var epochs = Common.AtLeast("--epochs", 1, 1, "epochs per run");
        var seeds = Common.AtLeast("--seeds", 1, 3, "seeds per arm (with --quick: 1 unless given)");
        var arms = Common.Arms(NormArms.Names);
        var batch = Common.AtLeast("--batch", 2, 32, "images per step");
        var rate = new Option<double>("--lr") { HelpName = "RATE", Description = "SGD's base learning rate (default 0.05 at batch 32, scaled linearly with --batch)" };
        rate.Validators.Add(result =>
        {
            double v = result.GetValueOrDefault<double>();
            if (!(v > 0) || !double.IsFinite(v)) result.AddError($"--lr must be a positive number, but was {v}.");
        });
        var width = Common.AtLeast("--width", 1, 16, "channels of the first stage (the stages have w, 2w, 4w)");
        var trainImages = Common.AtLeast("--train-images", 1, 60_000, "use only the first N training images");
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("resnet", Common.Prose("""
            The residual CNN (14 weight layers: a stem, three stages of two basic blocks of widths 16, 32
            and 64, global average pooling, a linear classifier) on Fashion-MNIST with no normalization
            (Fixup initialization), BatchNorm, GroupNorm, LayerNorm and InstanceNorm: SGD with momentum
            at batch 32, a cosine schedule, whole shuffled epochs. Prints test error, training time and
            images per second per run; writes DIR/resnet.csv, the loss curves DIR/resnet-curves.csv and
            a chart. The full mode (1 epoch, 3 seeds, 5 arms: docs/lab's results) took 1 h 38 min for its
            15 runs on 2 cores shared with other jobs (4-12 minutes per run; alone one epoch takes about 4
            minutes); --quick about a minute and a half. --batch with no --lr scales the rate linearly
            (Goyal et al.; Wu & He's batch sweep): 0.05 x batch / 32.
            """)) { quick, epochs, seeds, arms, batch, rate, width, trainImages, data, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? ResNetVision.Config.Quick : ResNetVision.Config.Full;
            if (r.GetResult(epochs) is { Implicit: false }) config = config with { Epochs = r.GetValue(epochs) };
            if (r.GetResult(seeds) is { Implicit: false }) config = config with { Seeds = r.GetValue(seeds) };
            if (r.GetValue(arms) is { Length: > 0 } chosen) config = config with { Arms = chosen.Distinct().ToArray() };
            if (r.GetResult(batch) is { Implicit: false }) config = config with { Batch = r.GetValue(batch), LearningRate = config.LearningRate * r.GetValue(batch) / config.Batch };
            if (r.GetResult(rate) is { Implicit: false }) config = config with { LearningRate = r.GetValue(rate) };
            if (r.GetResult(width) is { Implicit: false }) config = config with { Width = r.GetValue(width) };
            if (r.GetResult(trainImages) is { Implicit: false }) config = config with { TrainImages = r.GetValue(trainImages) };
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            int images = Math.Min(train.Count, config.TrainImages ?? int.MaxValue);
            Console.WriteLine($"Training on {images} images ({train.Source}), testing on {Math.Min(test.Count, config.TestImages)}; {config}.");
            var results = ResNetVision.Run(config, train, test, Progress(), Meter(ResNetVision.TotalSteps(config, train.Count)));
            string csv = Common.WriteCsv(dir, "resnet.csv", ResNetVision.Table(results).ToCsv());
            Common.WriteCsv(dir, "resnet-curves.csv", ResNetVision.Curves(results).ToCsv());
            var table = Common.Table("<arm", "test error", "sd", "seeds", "train s / run", "images/s");
            foreach (var g in results.GroupBy(x => x.Arm))
            {
                var error = SeedStats.Of(g.Select(x => x.TestError));
                table.AddTextRow(g.Key, $"{error.Mean:F4}", $"{error.Sd:F4}", $"{error.Count}", $"{g.Average(x => x.Seconds):F0}", $"{g.Average(x => x.ImagesPerSecond):F0}");
            }
            Common.Write(table);
            WriteFindings("Verdicts", Claims.BatchNormBest(results.Select(x => (x.Arm, x.Seed, x.TestError)), "BatchNorm has the lowest test error"));
            Console.WriteLine($"Every run: {csv}; loss curves: resnet-curves.csv; charts: {Path.GetFileName(ResNetVision.Plot(results, dir))}, {Path.GetFileName(ResNetVision.PlotCurves(results, dir))}");
        });
        return command;
    }

    private static Command LearningRateSweepCommand()
    {
        var quick = Common.Flag("--quick", "width 4, 40 steps, rates 0.01, 0.1 and 1, one seed, 500 test images");
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("lr-sweep", Common.Prose("""
            The learning-rate sweep (claim (a), the speed part; Bjorck et al. 2018): the residual CNN
            (width 8, 14 weight layers) and the same network without shortcuts, each with no
            normalization, BatchNorm, LayerNorm and GroupNorm, SGD with momentum 0.9 at learning rates
            0.003 to 1 for a fixed 100 steps of batch 32 (cosine schedule), 3 seeds; prints the test
            accuracy per rate (or "diverged") and the verdicts against no normalization; writes
            DIR/lr-sweep.csv and a chart per network. The full mode took 18 min 05 s on 2 cores; --quick:
            about a minute.
            """)) { quick, data, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? LearningRateSweep.Config.Quick : LearningRateSweep.Config.Full;
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            Console.WriteLine($"Training on {train.Count} images ({train.Source}); {config}.");
            var results = LearningRateSweep.Run(config, train, test, Progress(), Meter(LearningRateSweep.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, "lr-sweep.csv", LearningRateSweep.Table(results).ToCsv());
            var table = Common.Table(["<network", "<arm", .. config.Rates.Select(x => $"lr {x}")]);
            foreach (var g in results.GroupBy(x => (x.Network, x.Arm)))
                table.AddTextRow([g.Key.Network, g.Key.Arm, .. config.Rates.Select(rate =>
                {
                    var at = g.Where(x => x.LearningRate == rate).ToList();
                    int diverged = at.Count(x => x.Diverged);
                    var acc = SeedStats.Of(at.Select(LearningRateSweep.ScoredAccuracy));
                    return diverged == at.Count ? "diverged" : $"{acc.Mean:F3}" + (diverged > 0 ? $" ({diverged} diverged)" : "");
                })]);
            Common.Write(table);
            Console.WriteLine("Test accuracy (mean over seeds; a diverged run counts as 0.1).");
            WriteFindings("Against no normalization", Claims.LearningRate(results));
            Console.WriteLine($"Every run: {csv}; charts: {string.Join(", ", LearningRateSweep.Plot(results, dir).Select(Path.GetFileName))}");
        });
        return command;
    }

    private static Command ShiftCommand()
    {
        var quick = Common.Flag("--quick", "250 steps, one seed, 1000 test images");
        var data = Common.Data();
        var outDir = Common.Out("lab-results");
        var command = new Command("shift", Common.Prose("""
            Distribution shift: the vision experiment's CNN with no normalization, BatchNorm, LayerNorm,
            GroupNorm and InstanceNorm, trained on Fashion-MNIST as it is and tested on test images
            changed in brightness and contrast, inverted and with noise; BatchNorm also with AdaBN (its
            running statistics re-estimated on the changed images). Prints the test error per change and
            arm with the verdict rule against no normalization; writes DIR/shift.csv and a chart. The
            full mode (2000 steps, 3 seeds, 10,000 test images) took 4 min 27 s on 2 cores; --quick:
            about half a minute.
            """)) { quick, data, outDir };
        command.SetAction(r =>
        {
            var config = r.GetValue(quick) ? Shift.Config.Quick : Shift.Config.Full;
            string dir = r.GetValue(outDir)!;
            var (train, test) = FashionMnist.TrainAndTest(r.GetValue(data));
            Console.WriteLine($"Training on {train.Count} images, {config.Steps} AdamW steps (lr {config.LearningRate}) at batch {config.Batch}, {config.Seeds} seed(s); testing on {Math.Min(test.Count, config.TestImages)} changed test images.");
            var points = Shift.Run(config, train, test, Progress(), Meter(Shift.TotalSteps(config)));
            string csv = Common.WriteCsv(dir, "shift.csv", Shift.Table(points).ToCsv());
            var table = Common.Table(["<arm", .. Shift.Changes.Select(ch => ch.Name)]);
            foreach (string arm in Shift.Arms)
                table.AddTextRow([arm, .. Shift.Changes.Select(ch => $"{SeedStats.Of(points.Where(p => p.Arm == arm && p.Change == ch.Name).Select(p => p.TestError)).Mean:F3}")]);
            Common.Write(table);
            Console.WriteLine("Test error (mean over seeds). Against no normalization, by the verdict rule (2 standard errors):");
            foreach (var v in Shift.Verdicts(points))
                Console.WriteLine($"  {v.Change,-16} {v.Arm,-18} {v.VersusNone.Verdict,-22} {v.VersusNone.Numbers("F3")}; the change raised its error by {v.Increase:F3}");
            Console.WriteLine($"Every run: {csv}; chart: {Path.GetFileName(Shift.Plot(points, dir))}");
        });
        return command;
    }

    private static Command ChartsCommand()
    {
        var from = new Option<string?>("--from")
        {
            HelpName = "DIR",
            Description = "the folder of CSV files to draw from (e.g. docs/lab); default: the results committed in docs/lab, as this build holds them",
        };
        var data = Common.Data();
        var outDir = Common.Out("lab-charts", "charts (PNG and SVG)");
        var command = new Command("charts", Common.Prose("""
            Every chart of the lab drawn again from CSV files, without training: the saturation, batch-size,
            vision, language, shift, residual-CNN and data-parallel charts from whichever of their CSV
            files the source holds, and the two Figure 1 charts from the first test images (--data). With
            --from docs/lab --out docs/lab it regenerates the committed charts. Takes a few seconds.
            """)) { from, data, outDir };
        command.SetAction(r =>
        {
            var source = r.GetValue(from) is { } dir ? Lab.Results.LabResults.Folder(dir) : Lab.Results.LabResults.Committed;
            string target = r.GetValue(outDir)!;
            Console.WriteLine($"Drawing from {source.Origin} ({source.Files.Count} CSV files) into {target}.");
            var drawn = LabCharts.DrawAll(source, target, FashionMnist.LoadTest(r.GetValue(data)));
            Console.WriteLine($"Charts (PNG and SVG): {string.Join(", ", drawn.Charts.Select(c => Path.GetFileName(c)))}");
            if (drawn.Missing.Count > 0) Console.WriteLine($"Not drawn, no CSV file: {string.Join(", ", drawn.Missing)}");
        });
        return command;
    }

    private static Command VerdictsCommand()
    {
        var from = new Option<string?>("--from")
        {
            HelpName = "DIR",
            Description = "the folder of CSV files to decide from (e.g. docs/lab or a lab command's --out); default: the results committed in docs/lab, as this build holds them",
        };
        var command = new Command("verdicts", Common.Prose("""
            Every claim's verdicts decided again from CSV files, without training, by the same code as the
            report: for each experiment whose CSV file the source holds, each part of its claim, each case
            with its values (mean +- sd over seeds), the difference and the rule's two standard errors.
            Takes about a second.
            """)) { from };
        command.SetAction(r =>
        {
            var source = r.GetValue(from) is { } dir ? Lab.Results.LabResults.Folder(dir) : Lab.Results.LabResults.Committed;
            Console.WriteLine($"Deciding from {source.Origin} ({source.Files.Count} CSV files).");
            foreach (var (file, findings) in Claims.Of(source))
            {
                Console.WriteLine();
                if (findings is not null) WriteFindings(file, findings);
                else Console.WriteLine($"{file}: not in {source.Origin}.");
            }
        });
        return command;
    }

    /// <summary>Prints each finding: its part, case, verdict by the rule (2 standard errors, Welch) and values.</summary>
    private static void WriteFindings(string heading, IReadOnlyList<Finding> findings)
    {
        Console.WriteLine($"{heading} (the lab's rule: a difference beyond 2 standard errors, Welch):");
        foreach (var part in findings.GroupBy(f => f.Part))
        {
            Console.WriteLine($"  {part.Key}: {Claims.Summary(part.ToList())}");
            foreach (var f in part)
                Console.WriteLine($"    {f.Case}: {f.Verdict}; {f.Values}" + (f.Note is { } note ? $" ({note})" : ""));
        }
    }

    /// <summary>Prints the training's progress (steps, loss, examples/s, time left) every few seconds.</summary>
    private static ProgressMeter Meter(long totalSteps) =>
        new(totalSteps, line => Console.WriteLine($"  {line}")) { Interval = TimeSpan.FromSeconds(5) };

    /// <summary>Prints each finished run with the seconds since the experiment started.</summary>
    private static Action<string> Progress()
    {
        var watch = Stopwatch.StartNew();
        return run => Console.WriteLine($"  done: {run} ({watch.Elapsed.TotalSeconds:F0} s)");
    }
}
