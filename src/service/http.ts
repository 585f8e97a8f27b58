/** The operations endpoint: GET /metrics (Prometheus text) and GET /healthz. */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/**
 * ok: all is well. degraded: still consuming and producing, but something an operator must
 * look at (a broker down, partitions under-replicated); still live, so /healthz answers 200.
 * unhealthy: not doing its job (a fatal error, the consumer down, shutting down): 503.
 */
export type HealthStatus = 'ok' | 'degraded' | 'unhealthy';

export interface Health {
  readonly status: HealthStatus;
  /** Why it is not ok, one line each. */
  readonly reasons: readonly string[];
  readonly detail: Record<string, unknown>;
}

export function startHttpServer(host: string, port: number, registry: Registry, health: () => Health): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url?.split('?')[0];
    if (req.method === 'GET' && url === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(err.message);
        },
      );
      return;
    }
    if (req.method === 'GET' && url === '/healthz') {
      const h = health();
      res.writeHead(h.status === 'unhealthy' ? 503 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: h.status, reasons: h.reasons, ...h.detail }));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try /metrics or /healthz\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
