import base from "./playwright.config";
import { defineConfig } from "@playwright/test";

// Regenerates docs/screenshot.png (not a test):
//   cd end2end && npx playwright test -c screenshot.config.ts
export default defineConfig({ ...base, testDir: "./screenshot" });
