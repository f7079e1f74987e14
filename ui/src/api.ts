import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AdminService } from "./gen/airlock/v1/admin_service_pb";
import { ApprovalService } from "./gen/airlock/v1/approval_service_pb";
import { AuditService } from "./gen/airlock/v1/audit_service_pb";
import { RegistryService } from "./gen/airlock/v1/registry_service_pb";
import { RunService } from "./gen/airlock/v1/run_service_pb";
import { UsageService } from "./gen/airlock/v1/usage_service_pb";
import { WorkflowService } from "./gen/airlock/v1/workflow_service_pb";
import { session } from "./session";

const bearer: Interceptor = (next) => async (req) => {
  const key = session.key();
  if (key) req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};

// Same origin as the page: the control plane serves the UI and gRPC-Web together.
const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  interceptors: [bearer],
  defaultTimeoutMs: undefined,
});

export const admin = createClient(AdminService, transport);
export const approvals = createClient(ApprovalService, transport);
export const registry = createClient(RegistryService, transport);
export const runs = createClient(RunService, transport);
export const usage = createClient(UsageService, transport);
export const workflows = createClient(WorkflowService, transport);
export const audit = createClient(AuditService, transport);

export { Code, ConnectError };

const CODE_TEXT: Partial<Record<Code, string>> = {
  [Code.PermissionDenied]: "Refused",
  [Code.FailedPrecondition]: "Not possible now",
  [Code.InvalidArgument]: "Invalid request",
  [Code.NotFound]: "Not found",
  [Code.Unauthenticated]: "Not signed in",
  [Code.Unavailable]: "Server unavailable",
  [Code.AlreadyExists]: "Already exists",
  [Code.ResourceExhausted]: "Too large",
  [Code.Internal]: "Server error",
};

/** "Refused: bob submitted run … and cannot decide on it" — the server's own message. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  const label = CODE_TEXT[e.code] ?? Code[e.code] ?? "Error";
  return e.rawMessage ? `${label}: ${e.rawMessage}` : label;
}

export function code(err: unknown): Code {
  return ConnectError.from(err).code;
}

/** Called when the server says the key is not (or no longer) valid. */
let onUnauthenticated: (message: string) => void = () => undefined;
export function setUnauthenticatedHandler(fn: (message: string) => void): void {
  onUnauthenticated = fn;
}
/** True when the error ended the session (the caller should stop). */
export function handleAuthError(err: unknown): boolean {
  if (code(err) === Code.Unauthenticated) {
    onUnauthenticated(describe(err));
    return true;
  }
  return false;
}
