"""The built-in demo the scripted provider plays when it is given no script.

It walks a newcomer through the whole product with no API key: a read-only call that
runs at once, a file write and a Python run that wait for an operator's approval, and
a final answer. The demo cannot plan around tool results, so its later turns speak of
them in general terms; it does say when a call did not go through, and why (the
scripted provider adds that).
"""

_NOTES = """\
# Notes

Plan for this session:

1. Look at what is already in the workspace.
2. Keep these notes as a record of what was done.
3. Check the numbers with a short Python run in the sandbox.
"""

_CODE = """\
squares = [n * n for n in range(1, 11)]
primes = [n for n in range(2, 50) if all(n % d for d in range(2, int(n**0.5) + 1))]
print(f"Sum of the first ten squares: {sum(squares)}")
print(f"Primes below 50: {primes}")
"""

DEMO_SCRIPT: list[list[dict[str, object]]] = [
    [
        {"type": "text", "text": "I'll start by looking at what's already in the workspace."},
        {"type": "tool_use", "name": "list_dir", "input": {"path": "."}},
    ],
    [
        {
            "type": "text",
            "text": "Now I'll write down the plan in notes.md, so there's a record of what "
            "this session does. Writing a file needs your approval.",
        },
        {
            "type": "tool_use",
            "name": "write_file",
            "input": {"path": "notes.md", "content": _NOTES},
        },
    ],
    [
        {
            "type": "text",
            "text": "Let me read notes.md back to check that it was saved as written.",
        },
        {"type": "tool_use", "name": "read_file", "input": {"path": "notes.md"}},
    ],
    [
        {
            "type": "text",
            "text": "Next I'll run a short Python program in the sandbox to work out a couple "
            "of numbers. Running code needs your approval too.",
        },
        {"type": "tool_use", "name": "run_python", "input": {"code": _CODE}},
    ],
    [
        {
            "type": "text",
            "text": "That's the end of the demo. I looked at the workspace, asked to write the "
            "plan to notes.md and read it back, and asked to run a small computation in the "
            "sandbox; what each call returned, or why it did not run, is in the transcript "
            "above. With a real model, the steps would follow from your goal, and every call "
            "would pass the same checks and approvals.",
        }
    ],
]
