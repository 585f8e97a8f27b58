/** Types of scripts/kafka-broker.mjs (imported by the test setup and bench/kafka.ts). */
export declare const javaAvailable: () => boolean;
export declare const parseKeyValueLines: (stdout: string) => Record<string, string>;
export interface JarCluster {
  /** scripts/kafka.mjs's KAFKA_* output lines. */
  readonly values: Readonly<Record<string, string>>;
  readonly dir: string;
  readonly startSeconds: number;
  stop(): void;
}
export declare function startJarCluster(options: { nodes: number; sasl?: boolean; timeoutMs?: number }): Promise<JarCluster>;
export declare function startMockCluster(): Promise<{ brokers: string; stop(): void }>;
