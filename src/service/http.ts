/** The operations endpoint: GET /metrics (Prometheus text) and GET /healthz. */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { KeyAnswer } from './key-query.js';

/**
 * ok: all is well. degraded: still consuming and producing, but something an operator must
 * look at (a broker down, partitions under-replicated); still live, so /healthz answers 200.
 * unhealthy: not doing its job (a fatal error, the consumer down, shutting down): 503.
 */
export type HealthStatus = 'ok' | 'degraded' | 'unhealthy';

export interface Health {
  readonly status: HealthStatus;
  /** Doing its job (consuming, producing): /readyz answers 200, else 503. */
  readonly ready: boolean;
  /** Why it is not ok, one line each. */
  readonly reasons: readonly string[];
  readonly detail: Record<string, unknown>;
}

export interface HttpRoutes {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  readonly health: () => Health;
  /** GET /keys/{key} (see key-query.ts); undefined until the service has started. */
  readonly keys: () => ((key: string) => KeyAnswer) | undefined;
}

export function startHttpServer(routes: HttpRoutes): Promise<Server> {
  const { host, port, registry, health } = routes;
  const server = createServer((req, res) => {
    const url = req.url?.split('?')[0];
    if (req.method === 'GET' && url?.startsWith('/keys/')) {
      const answer = answerKey(routes.keys(), url.slice('/keys/'.length));
      res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.location ? { location: answer.location } : {}) });
      res.end(JSON.stringify(answer.body));
      return;
    }
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
    // Liveness (/healthz: 503 only when restarting the process is the cure) and readiness
    // (/readyz: 503 while it cannot do its job: brokers unreachable, sends or fetches stalled).
    if (req.method === 'GET' && (url === '/healthz' || url === '/readyz')) {
      const h = health();
      const ok = url === '/healthz' ? h.status !== 'unhealthy' : h.ready;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: h.status, ready: h.ready, reasons: h.reasons, ...h.detail }));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try /metrics, /healthz, /readyz or /keys/{key}\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/** The answer to GET /keys/{encoded}: a key that does not decode is a 400, one asked before the start a 503. */
function answerKey(query: ((key: string) => KeyAnswer) | undefined, encoded: string): KeyAnswer {
  if (!query) return { status: 503, body: { error: 'starting: keys are answered once the service has joined its group' } };
  let key: string;
  try {
    key = decodeURIComponent(encoded);
  } catch {
    return { status: 400, body: { error: 'key: not a valid percent-encoded UTF-8 string' } };
  }
  return query(key);
}
