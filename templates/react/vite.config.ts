import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// Host and port are intentionally not set here: pass them on the command
// line, e.g. `vite --host 0.0.0.0 --port 5173`.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  server: {
    strictPort: true,
  },
  preview: {
    strictPort: true,
  },
});
