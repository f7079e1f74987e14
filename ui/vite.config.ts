import { defineConfig } from "vite";

// The built UI is served by the control plane (same origin as gRPC-Web), from server/webui/.
// `npm run dev` proxies the API to a local `airlock serve` (AIRLOCK_UI_API, default :8080).
const api = process.env.AIRLOCK_UI_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  build: {
    outDir: "../server/webui",
    emptyOutDir: true,
    target: "es2022",
    assetsInlineLimit: 0, // no data: URIs; everything is a same-origin file (CSP)
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: true,
  },
  server: {
    proxy: { "^/airlock\\.v1\\.": { target: api, changeOrigin: false } },
  },
});
