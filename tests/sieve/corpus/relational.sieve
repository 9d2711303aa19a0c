require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; }
elsif address :count "gt" :comparator "i;ascii-numeric" ["to", "cc"] "2" { fileinto "Crowd"; }
