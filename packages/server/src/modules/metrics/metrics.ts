import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { RadiusStats } from "../../radius/server.js";

/**
 * Prometheus metrics of one Tessera process: authentications by method and result with
 * their latency, RADIUS packet counters, HTTP request latency, and Node's own figures.
 * One registry per process (not prom-client's global one), so tests can run several.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "tessera_" });
  const authentications = new Counter({
    name: "tessera_authentications_total",
    help: "Authentications answered, by method (rest, radius), result (accept, reject, pending) and reason",
    labelNames: ["method", "result", "reason"] as const,
    registers: [registry],
  });
  const authDuration = new Histogram({
    name: "tessera_authentication_duration_seconds",
    help: "Time to decide an authentication (a push login: to open its challenge)",
    labelNames: ["method"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: "tessera_http_request_duration_seconds",
    help: "HTTP requests by route and status class",
    labelNames: ["route", "status"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  let radiusStats: (() => RadiusStats) | null = null;
  // Read from the RADIUS server at each scrape: its counts since start as counters, and
  // what it holds at that moment as gauges. Registered once a RADIUS server is watched:
  // a node without one shows none, rather than gauges that say 0.
  const radiusMetrics = [
    new Counter({
      name: "tessera_radius_packets_total",
      help: "RADIUS server counts since start, by counter (requests, accepts, rejects, challenges, statusAnswers, duplicates, resent, dropped, unknownClient, badAuthenticator, malformed, unexpectedCode, overloaded, notReady, errors)",
      labelNames: ["counter"] as const,
      registers: [],
      collect() {
        if (!radiusStats) return;
        this.reset();
        const { inFlight: _inFlight, cached: _cached, ...counts } = radiusStats();
        for (const [counter, value] of Object.entries(counts)) this.inc({ counter }, value);
      },
    }),
    new Gauge({
      name: "tessera_radius_in_flight",
      help: "RADIUS requests being authenticated now",
      registers: [],
      collect() {
        if (radiusStats) this.set(radiusStats().inFlight);
      },
    }),
    new Gauge({
      name: "tessera_radius_cached_answers",
      help: "RADIUS answers held now for retransmissions (the duplicate cache)",
      registers: [],
      collect() {
        if (radiusStats) this.set(radiusStats().cached);
      },
    }),
  ];
  const webPushes = new Counter({
    name: "tessera_web_push_total",
    help: "Web Push messages to devices, by outcome (sent, gone: the subscription expired, failed)",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const pushEnded = new Counter({
    name: "tessera_push_logins_ended_total",
    help: "Push logins by how they ended (approved, denied, fraud: denied and reported, expired, cancelled: the passcode was typed or the application withdrew it)",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const auditLinks = new Counter({
    name: "tessera_audit_link_passes_total",
    help: "Passes that linked audit records into the chain after their commit (PostgreSQL), by outcome (linked, failed: the records wait and the next pass tries again)",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const auditLinked = new Counter({
    name: "tessera_audit_linked_records_total",
    help: "Audit records linked into the chain after their commit (PostgreSQL)",
    registers: [registry],
  });
  return {
    registry,
    authentication(method: string, result: string, reason: string | undefined, seconds: number): void {
      authentications.inc({ method, result, reason: reason ?? "" });
      authDuration.observe({ method }, seconds);
    },
    httpRequest(route: string, statusCode: number, seconds: number): void {
      httpDuration.observe({ route, status: `${Math.floor(statusCode / 100)}xx` }, seconds);
    },
    webPush(outcome: string): void {
      webPushes.inc({ outcome });
    },
    pushEnded(outcome: string, count = 1): void {
      pushEnded.inc({ outcome }, count);
    },
    auditLinkPass(outcome: { linked: number } | { failed: unknown }): void {
      if ("linked" in outcome) {
        auditLinks.inc({ outcome: "linked" });
        auditLinked.inc(outcome.linked);
      } else auditLinks.inc({ outcome: "failed" });
    },
    watchRadius(stats: () => RadiusStats): void {
      if (!radiusStats) for (const metric of radiusMetrics) registry.registerMetric(metric);
      radiusStats = stats;
    },
    async render(): Promise<{ contentType: string; body: string }> {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
