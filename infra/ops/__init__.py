"""Reading stacks from outside the program: their settings, outputs and the engine's environment.

The ops commands (infra/backup, infra/health, infra/schema) and the tests'
inventory use this package; none of them parses a stack file or builds a
Pulumi environment of its own.
"""
