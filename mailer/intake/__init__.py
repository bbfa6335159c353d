"""New issues written from elsewhere: a digest of a feed (RSS or Atom), posts exported from
Substack. Each ends as a Markdown file in issues/ that builds like one written by hand."""
