/** /metrics's health and readiness gauges say what /healthz and /readyz say, at every scrape, whether or not they were asked. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { projectPath } from '../src/paths.js';
import { ServiceMetrics } from '../src/service/metrics.js';

const gauge = async (m: ServiceMetrics, name = 'rnnstream_health_status'): Promise<string | undefined> => new RegExp(`^${name} (\\S+)$`, 'm').exec(await m.registry.metrics())?.[1];

describe('rnnstream_health_status', () => {
  it('is read from the health source at each scrape', async () => {
    const m = new ServiceMetrics();
    let status: 'ok' | 'degraded' | 'unhealthy' = 'ok';
    let ready = true;
    m.reportHealthFrom(() => ({ status, ready }));
    expect(await gauge(m)).toBe('0');
    expect(await gauge(m, 'rnnstream_ready')).toBe('1');
    status = 'degraded';
    ready = false;
    expect(await gauge(m)).toBe('1');
    expect(await gauge(m, 'rnnstream_ready')).toBe('0');
    status = 'unhealthy';
    expect(await gauge(m)).toBe('2');
  });
});

describe('the metrics an operator reads', () => {
  it('are each documented in docs/deploy.md, with their units in their names', async () => {
    const readme = readFileSync(projectPath('docs', 'deploy.md'), 'utf8');
    const names = (await new ServiceMetrics().registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => !n.startsWith('rnnstream_process_') && !n.startsWith('rnnstream_nodejs_'));
    expect(names.length).toBeGreaterThan(30);
    expect(names.filter((n) => !readme.includes(`\`${n}`))).toEqual([]);
    // Prometheus conventions: counters end in _total; a quantity says its unit.
    const counters = (await new ServiceMetrics().registry.getMetricsAsJSON()).filter((m) => String(m.type) === 'counter');
    expect(counters.length).toBeGreaterThan(10);
    for (const m of counters) expect(m.name, m.name).toMatch(/_total$/);
  });
});
