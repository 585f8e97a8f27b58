/** /metrics's health gauge says what /healthz says, at every scrape, whether or not /healthz was asked. */
import { describe, expect, it } from 'vitest';
import { ServiceMetrics } from '../src/service/metrics.js';

const gauge = async (m: ServiceMetrics): Promise<string | undefined> => /^rnnstream_health_status (\S+)$/m.exec(await m.registry.metrics())?.[1];

describe('rnnstream_health_status', () => {
  it('is read from the health source at each scrape', async () => {
    const m = new ServiceMetrics();
    let status: 'ok' | 'degraded' | 'unhealthy' = 'ok';
    m.reportHealthFrom(() => status);
    expect(await gauge(m)).toBe('0');
    status = 'degraded';
    expect(await gauge(m)).toBe('1');
    status = 'unhealthy';
    expect(await gauge(m)).toBe('2');
  });
});
