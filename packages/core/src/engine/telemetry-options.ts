/**
 * The metrics options of a profile (IcapProfile.metrics): apart from telemetry.ts so that the
 * profile's types need not import the telemetry that reads them.
 */

/** The parts of a prom-client Registry used here. */
export interface PromRegistryLike {
  registerMetric(metric: PromMetric): void;
  removeSingleMetric(name: string): void;
}

export interface PromMetric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  aggregator: 'sum';
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: 'sum';
    values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }>;
  }>;
  reset(): void;
}

export interface MetricsOptions {
  /** A prom-client Registry to expose Prometheus metrics in (none is used otherwise). */
  registry?: PromRegistryLike | undefined;
  /** Prefix of the Prometheus metric names. Default 'icapkit_'. */
  prefix?: string | undefined;
}
