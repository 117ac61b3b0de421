import { Link, useLocation } from "react-router-dom";

export default function NotFound() {
  const location = useLocation();

  return (
    <main className="flex min-h-screen flex-col items-center justify-center px-6 text-center">
      <p className="text-sm font-semibold text-orange-600">404</p>
      <h1 className="mt-2 text-3xl font-bold tracking-tight text-slate-900">
        Page not found
      </h1>
      <p className="mt-3 text-slate-600">
        Nothing lives at{" "}
        <code className="rounded bg-slate-200/70 px-1.5 py-0.5 text-sm text-slate-800">
          {location.pathname}
        </code>
        .
      </p>
      <Link
        to="/"
        className="mt-8 inline-flex h-10 items-center rounded-lg bg-orange-500 px-4 text-sm font-medium text-white shadow-sm transition-colors hover:bg-orange-600"
      >
        Back to home
      </Link>
    </main>
  );
}
