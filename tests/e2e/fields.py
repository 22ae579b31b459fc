"""Header-field lookups shared by the backend's requests and the client's
responses: both keep their fields as a list of (name, value) in wire order."""


class FieldList:
    """Mixin for objects with a `headers` list of (name, value)."""

    def get(self, name, default=None):
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def has(self, name):
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def tokens(self, name):
        """The comma-separated tokens of every field NAME, lowercased."""
        out = []
        for v in self.get_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out
