"""Application classes for the interop tests (importable by the test and by worker.py, the
way a real ZODB application's classes are importable by every client)."""
import persistent


class Account(persistent.Persistent):

    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance
        self.history = []

    def deposit(self, amount):
        self.balance += amount
        self.history = self.history + [amount]

    def __eq__(self, other):
        return (isinstance(other, Account) and other.owner == self.owner
                and other.balance == self.balance and other.history == self.history)

    __hash__ = None
