import { useState } from "react";
import { Button } from "../components/Button.tsx";
import { Card } from "../components/Card.tsx";

export default function Index() {
  const [count, setCount] = useState(0);

  return (
    <main className="flex min-h-screen flex-col items-center justify-center px-6 py-16">
      <div className="w-full max-w-2xl text-center">
        <span className="inline-flex items-center gap-2 rounded-full bg-orange-100 px-3 py-1 text-xs font-medium text-orange-700">
          <span className="size-1.5 rounded-full bg-orange-500" />
          Built with Blaze
        </span>

        <h1 className="mt-6 text-4xl font-bold tracking-tight text-slate-900 sm:text-5xl">
          Your app starts here
        </h1>
        <p className="mx-auto mt-4 max-w-xl text-lg text-slate-600">
          Describe what you want to build in the chat, and this page will turn
          into it.
        </p>

        <div className="mt-8 flex items-center justify-center gap-3">
          <Button size="lg" onClick={() => setCount((c) => c + 1)}>
            Clicked {count} {count === 1 ? "time" : "times"}
          </Button>
          <Button
            size="lg"
            variant="secondary"
            onClick={() => setCount(0)}
            disabled={count === 0}
          >
            Reset
          </Button>
        </div>

        <div className="mt-14 grid gap-4 text-left sm:grid-cols-3">
          <Card title="React + TypeScript">
            Typed components with fast refresh while you edit.
          </Card>
          <Card title="Tailwind CSS">
            Utility classes for styling, straight in your markup.
          </Card>
          <Card title="React Router">
            Pages live in <code className="text-slate-800">src/pages</code>,
            routes in <code className="text-slate-800">src/App.tsx</code>.
          </Card>
        </div>
      </div>
    </main>
  );
}
