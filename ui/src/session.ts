// The API key lives in sessionStorage only (this tab, until it closes); never in the URL,
// never in localStorage or cookies.
import type { ApiKey } from "./gen/airlock/v1/admin_service_pb";
import { Role } from "./gen/airlock/v1/admin_service_pb";

const STORAGE_KEY = "airlock.apiKey";
let me: ApiKey | undefined;

export const session = {
  key(): string | null {
    return sessionStorage.getItem(STORAGE_KEY);
  },
  save(key: string): void {
    sessionStorage.setItem(STORAGE_KEY, key);
  },
  clear(): void {
    sessionStorage.removeItem(STORAGE_KEY);
    me = undefined;
  },
  setMe(k: ApiKey): void {
    me = k;
  },
  me(): ApiKey | undefined {
    return me;
  },
  canDecide(): boolean {
    return me?.role === Role.ADMIN || me?.role === Role.APPROVER;
  },
  canWatchApprovals(): boolean {
    return me?.role === Role.ADMIN || me?.role === Role.APPROVER || me?.role === Role.VIEWER;
  },
};
