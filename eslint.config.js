// Lint runs in the test command; type-aware rules catch floating promises,
// which in a server are lost errors.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "data/**", "test-artifacts/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["packages/*/src/**/*.ts"],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
    },
  },
  {
    files: ["**/*.js"],
    // Plain Node scripts (bench/, bin/): Node's globals are too many to list here.
    // The test command type-checks bench/ (bench/tsconfig.json), which catches undefined
    // names; bin/ holds two-line launchers.
    rules: { "no-undef": "off" },
  },
);
